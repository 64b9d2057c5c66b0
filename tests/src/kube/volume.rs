//! A Secret volume laid out as the kubelet's atomic writer lays it out, so
//! the processes see a renewal exactly as in a pod: each key is a symlink
//! `key -> ..data/key`, `..data` is a symlink to a timestamped directory,
//! and an update writes a new directory and swaps `..data` with one rename.
//! A reader therefore sees either the old set of files or the new one,
//! never a mix within one file (across files it may, between two reads).

use std::io;
use std::path::{Path, PathBuf};

/// One mounted Secret.
#[derive(Debug)]
pub struct SecretVolume {
    dir: PathBuf,
    generation: u32,
    current: Option<PathBuf>,
}

impl SecretVolume {
    /// Creates the volume in `dir` holding `files` (name, content).
    pub fn create(dir: &Path, files: &[(String, Vec<u8>)]) -> io::Result<SecretVolume> {
        std::fs::create_dir_all(dir)?;
        let mut v = SecretVolume {
            dir: dir.to_owned(),
            generation: 0,
            current: None,
        };
        v.update(files)?;
        Ok(v)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Replaces the whole content atomically, as the kubelet does when the
    /// Secret changes.
    pub fn update(&mut self, files: &[(String, Vec<u8>)]) -> io::Result<()> {
        self.generation += 1;
        let name = format!("..2026_01_01_00_00_00.{:06}", self.generation);
        let data = self.dir.join(&name);
        std::fs::create_dir(&data)?;
        for (file, content) in files {
            std::fs::write(data.join(file), content)?;
        }
        let staged = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(&name, &staged)?;
        std::fs::rename(&staged, self.dir.join("..data"))?;
        for (file, _) in files {
            let link = self.dir.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(file), &link)?;
            }
        }
        if let Some(old) = self.current.replace(data) {
            std::fs::remove_dir_all(old)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_swaps_every_file_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = |v: &str| vec![("tls.crt".to_owned(), v.as_bytes().to_vec())];
        let mut vol = SecretVolume::create(&dir.path().join("tls"), &files("one")).expect("create");
        let path = vol.path().join("tls.crt");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "one");
        vol.update(&files("two")).expect("update");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "two");
        assert!(std::fs::symlink_metadata(&path).expect("meta").is_symlink());
    }
}
