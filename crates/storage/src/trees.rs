//! The snapshot format of applications that keep their state in sled trees: each tree as its
//! name, then its entries, streamed so a snapshot never has to fit in memory.
//!
//! ```text
//! snapshot := tree*
//! tree     := bytes(name) (0x01 bytes(key) bytes(value))* 0x00
//! bytes    := u64 big-endian length, then that many bytes
//! ```

use std::io::{Read, Write};

use crate::{Error, Result};

/// Entries written to sled in one batch while importing.
const IMPORT_BATCH: usize = 4_096;

fn write_bytes(out: &mut dyn Write, b: &[u8]) -> Result<()> {
    out.write_all(&(b.len() as u64).to_be_bytes())?;
    out.write_all(b)?;
    Ok(())
}

fn read_bytes(input: &mut dyn Read) -> Result<Vec<u8>> {
    let mut len = [0u8; 8];
    input.read_exact(&mut len).map_err(truncated)?;
    let len = u64::from_be_bytes(len);
    let mut b = Vec::new();
    let read = input.take(len).read_to_end(&mut b)?;
    if read as u64 != len {
        return Err(Error::Corrupt("truncated snapshot".into()));
    }
    Ok(b)
}

fn truncated(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::Corrupt("truncated snapshot".into())
    } else {
        e.into()
    }
}

/// Writes `trees` to `out`.
pub fn export_trees<'a>(
    trees: impl IntoIterator<Item = (&'a str, &'a sled::Tree)>,
    out: &mut dyn Write,
) -> Result<()> {
    for (name, tree) in trees {
        write_bytes(out, name.as_bytes())?;
        for kv in tree.iter() {
            let (k, v) = kv?;
            out.write_all(&[1])?;
            write_bytes(out, &k)?;
            write_bytes(out, &v)?;
        }
        out.write_all(&[0])?;
    }
    Ok(())
}

/// Replaces the contents of `trees` with what [`export_trees`] wrote: every one of them is
/// cleared first (a tree the snapshot does not name ends empty); a tree the snapshot names
/// that is not among `trees` is an error.
pub fn import_trees<'a>(
    input: &mut dyn Read,
    trees: impl IntoIterator<Item = (&'a str, &'a sled::Tree)>,
) -> Result<()> {
    let trees: Vec<(&str, &sled::Tree)> = trees.into_iter().collect();
    for (_, t) in &trees {
        t.clear()?;
    }
    loop {
        // The end of the stream is allowed only between trees.
        let mut len = [0u8; 8];
        let first = loop {
            match input.read(&mut len[..1]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if first == 0 {
            return Ok(());
        }
        input.read_exact(&mut len[1..]).map_err(truncated)?;
        let mut name = Vec::new();
        let n = u64::from_be_bytes(len);
        if input.take(n).read_to_end(&mut name)? as u64 != n {
            return Err(Error::Corrupt("truncated snapshot".into()));
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        let t = trees
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| Error::Corrupt(format!("snapshot of an unknown tree '{name}'")))?;
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        loop {
            let mut tag = [0u8; 1];
            input.read_exact(&mut tag).map_err(truncated)?;
            match tag[0] {
                0 => break,
                1 => {
                    let k = read_bytes(input)?;
                    let v = read_bytes(input)?;
                    batch.insert(k, v);
                    pending += 1;
                    if pending == IMPORT_BATCH {
                        t.apply_batch(std::mem::take(&mut batch))?;
                        pending = 0;
                    }
                }
                x => return Err(Error::Corrupt(format!("snapshot entry tag {x}"))),
            }
        }
        t.apply_batch(batch)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_round_trip_and_truncation_is_an_error() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let a = db.open_tree("a").unwrap();
        let b = db.open_tree("b").unwrap();
        for i in 0..10_000u32 {
            a.insert(i.to_be_bytes(), vec![7u8; (i % 50) as usize])
                .unwrap();
        }
        b.insert("k", "").unwrap();
        let mut out = Vec::new();
        export_trees([("a", &a), ("b", &b)], &mut out).unwrap();

        let copy = sled::Config::new().temporary(true).open().unwrap();
        let (ca, cb) = (copy.open_tree("a").unwrap(), copy.open_tree("b").unwrap());
        cb.insert("stale", "x").unwrap();
        let named = [("a", &ca), ("b", &cb)];
        import_trees(&mut out.as_slice(), named).unwrap();
        assert_eq!(ca.len(), 10_000);
        assert!(ca
            .iter()
            .zip(a.iter())
            .all(|(x, y)| x.unwrap() == y.unwrap()));
        assert_eq!(
            cb.iter().keys().collect::<Result<Vec<_>, _>>().unwrap(),
            vec![sled::IVec::from("k")]
        );

        for cut in [3, out.len() / 2, out.len() - 1] {
            let e = import_trees(&mut &out[..cut], named).unwrap_err();
            assert!(e.to_string().contains("truncated"), "{cut}: {e}");
        }
        let e = import_trees(&mut out.as_slice(), [("b", &cb)]).unwrap_err();
        assert!(e.to_string().contains("unknown tree"), "{e}");
    }
}
