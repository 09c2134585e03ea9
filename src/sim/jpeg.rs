//! A minimal baseline JPEG encoder for solid-colour images: enough for
//! sampler preview frames, which the real server sends as JPEG. Every 8×8
//! block of a solid image has only a DC coefficient, so the entropy coding
//! reduces to DC differences and end-of-block codes.

/// JPEG bytes of a `width`×`height` image filled with `rgb`.
pub(crate) fn solid(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let (w, h) = (width.clamp(1, 65_535), height.clamp(1, 65_535));
    let [r, g, b] = rgb.map(f64::from);
    let ycc = [
        0.299 * r + 0.587 * g + 0.114 * b,
        -0.168_736 * r - 0.331_264 * g + 0.5 * b + 128.0,
        0.5 * r - 0.418_688 * g - 0.081_312 * b + 128.0,
    ];
    // DC of an 8×8 block of constant level-shifted value s is 8·s
    // (quantiser 1).
    let dc = ycc.map(|v| (8.0 * (v.round().clamp(0.0, 255.0) - 128.0)) as i32);

    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&[0xFF, 0xD8]);
    // APP0 JFIF.
    out.extend_from_slice(&[
        0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ]);
    // DQT: table 0, all ones.
    out.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    out.extend_from_slice(&[1u8; 64]);
    // SOF0: 8-bit, 3 components, no subsampling, quant table 0.
    out.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 8]);
    out.extend_from_slice(&(h as u16).to_be_bytes());
    out.extend_from_slice(&(w as u16).to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]);
    // DHT: the standard luminance DC table, and an AC table holding EOB only.
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x1F, 0x00]);
    out.extend_from_slice(&DC_BITS);
    out.extend_from_slice(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    out.extend_from_slice(&[0xFF, 0xC4, 0x00, 0x14, 0x10]);
    out.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.push(0x00);
    // SOS: all components use tables 0/0, full spectral range.
    out.extend_from_slice(&[
        0xFF, 0xDA, 0x00, 0x0C, 3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0,
    ]);

    let codes = dc_codes();
    let mut bits = BitWriter::default();
    let blocks = w.div_ceil(8) * h.div_ceil(8);
    let mut prev = [0i32; 3];
    for _ in 0..blocks {
        for c in 0..3 {
            let diff = dc[c] - prev[c];
            prev[c] = dc[c];
            let cat = category(diff);
            let (code, len) = codes[cat as usize];
            bits.put(u32::from(code), len);
            if cat > 0 {
                let v = if diff >= 0 {
                    diff
                } else {
                    diff + (1 << cat) - 1
                };
                bits.put(v as u32, cat);
            }
            // EOB: the AC table's only code, `0`.
            bits.put(0, 1);
        }
    }
    bits.finish(&mut out);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// Code counts per length of the standard luminance DC table (Annex K).
const DC_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];

/// Canonical Huffman codes `(code, length)` for DC categories 0..=11.
fn dc_codes() -> [(u16, u8); 12] {
    let mut codes = [(0u16, 0u8); 12];
    let mut code: u16 = 0;
    let mut symbol = 0;
    for (i, &count) in DC_BITS.iter().enumerate() {
        for _ in 0..count {
            codes[symbol] = (code, i as u8 + 1);
            symbol += 1;
            code += 1;
        }
        code <<= 1;
    }
    codes
}

/// Bits needed for |v| (the JPEG magnitude category).
fn category(v: i32) -> u8 {
    (32 - v.unsigned_abs().leading_zeros()) as u8
}

#[derive(Default)]
struct BitWriter {
    acc: u32,
    n: u8,
    bytes: Vec<u8>,
}

impl BitWriter {
    fn put(&mut self, value: u32, len: u8) {
        for i in (0..len).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.byte();
            }
        }
    }

    fn byte(&mut self) {
        let b = self.acc as u8;
        self.bytes.push(b);
        // Byte stuffing: a data 0xFF is followed by 0x00.
        if b == 0xFF {
            self.bytes.push(0);
        }
        self.acc = 0;
        self.n = 0;
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        // Pad the last byte with ones.
        while self.n != 0 {
            self.put(1, 1);
        }
        out.extend_from_slice(&self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_and_codes() {
        assert_eq!(category(0), 0);
        assert_eq!(category(-1), 1);
        assert_eq!(category(1016), 10);
        assert_eq!(category(-1024), 11);
        assert_eq!(dc_codes()[0], (0b00, 2));
        assert_eq!(dc_codes()[11], (0b1_1111_1110, 9));
    }

    #[test]
    fn writes_markers() {
        let j = solid(16, 8, [255, 0, 0]);
        assert_eq!(&j[..2], &[0xFF, 0xD8]);
        assert_eq!(&j[j.len() - 2..], &[0xFF, 0xD9]);
    }
}
