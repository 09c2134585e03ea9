//! WebDataset shards: `shard-000000.tar`, … with `shard_size` samples each;
//! a sample is `<key>.<ext>`, `<key>.json` and `<key>.txt`. Deterministic:
//! fixed order, mtime 0, uid/gid 0, no user names, mode 0644, so the same
//! folder gives byte-identical tars and nightly exports diff cleanly.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{ExportError, Sample, io_at};
use crate::folder::RunFolder;

fn header(name: &str, size: u64) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    // Names are ours (key + extension): short, ASCII, no `..`.
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn append(b: &mut tar::Builder<impl Write>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    b.append(&header(name, bytes.len() as u64)?, bytes)
}

/// Writes the shards into `dir`; returns how many.
pub(super) fn write(
    folder: &RunFolder,
    dir: &Path,
    samples: &[Sample],
    shard_size: usize,
) -> Result<usize, ExportError> {
    let mut shards = 0;
    for (i, chunk) in samples.chunks(shard_size).enumerate() {
        let path = dir.join(format!("shard-{i:06}.tar"));
        let file = File::create(&path).map_err(io_at(&path))?;
        let mut b = tar::Builder::new(BufWriter::new(file));
        for s in chunk {
            let bytes = super::open(folder, &s.rel)?
                .read_all()
                .map_err(io_at(&folder.root().join(&s.rel)))?;
            let mut json = serde_json::to_vec(&s.json).expect("JSON values serialise");
            json.push(b'\n');
            let res = append(&mut b, &format!("{}.{}", s.key, s.ext), &bytes)
                .and_then(|()| append(&mut b, &format!("{}.json", s.key), &json))
                .and_then(|()| match &s.txt {
                    Some(t) => append(&mut b, &format!("{}.txt", s.key), t.as_bytes()),
                    None => Ok(()),
                });
            res.map_err(io_at(&path))?;
        }
        b.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(io_at(&path))?;
        shards += 1;
    }
    Ok(shards)
}
