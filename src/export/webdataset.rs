//! WebDataset shards: `shard-000000.tar`, … with `shard_size` samples each;
//! a sample is `<key>.<ext>`, `<key>.json` and `<key>.txt`. Deterministic:
//! fixed order, mtime 0, uid/gid 0, no user names, mode 0644, so the same
//! folder gives byte-identical tars and nightly exports diff cleanly.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

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

/// The shards being written: a sample goes into the open shard, which is
/// finished when it holds `size` samples. A sample's file is copied into
/// the tar as it is read, never held whole.
pub(super) struct Shards {
    dir: PathBuf,
    size: usize,
    open: Option<(PathBuf, tar::Builder<BufWriter<File>>)>,
    in_open: usize,
    shards: usize,
}

impl Shards {
    /// Shards of `size` samples (at least 1) in `dir`.
    pub(super) fn new(dir: &Path, size: usize) -> Shards {
        Shards {
            dir: dir.to_path_buf(),
            size: size.max(1),
            open: None,
            in_open: 0,
            shards: 0,
        }
    }

    /// Writes one sample.
    pub(super) fn add(&mut self, folder: &RunFolder, s: &Sample) -> Result<(), ExportError> {
        if self.in_open == self.size {
            self.close()?;
        }
        let (path, b) = match &mut self.open {
            Some(open) => open,
            None => {
                let path = self.dir.join(format!("shard-{:06}.tar", self.shards));
                let file = File::create(&path).map_err(io_at(&path))?;
                self.shards += 1;
                self.in_open = 0;
                self.open
                    .insert((path, tar::Builder::new(BufWriter::new(file))))
            }
        };
        let mut from = super::open(folder, &s.rel)?;
        let size = from.meta.len();
        let mut json = serde_json::to_vec(&s.json).expect("JSON values serialise");
        json.push(b'\n');
        // The file's length from its descriptor: reading no further keeps
        // the member whole even if the file grew meanwhile.
        let res = header(&format!("{}.{}", s.key, s.ext), size)
            .and_then(|h| b.append(&h, (&mut from.file).take(size)))
            .and_then(|()| append(b, &format!("{}.json", s.key), &json))
            .and_then(|()| match &s.txt {
                Some(t) => append(b, &format!("{}.txt", s.key), t.as_bytes()),
                None => Ok(()),
            });
        res.map_err(io_at(path))?;
        self.in_open += 1;
        Ok(())
    }

    fn close(&mut self) -> Result<(), ExportError> {
        if let Some((path, b)) = self.open.take() {
            b.into_inner()
                .and_then(|mut w| w.flush())
                .map_err(io_at(&path))?;
        }
        Ok(())
    }

    /// Finishes the open shard; returns how many were written.
    pub(super) fn finish(mut self) -> Result<usize, ExportError> {
        self.close()?;
        Ok(self.shards)
    }
}
