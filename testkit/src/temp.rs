//! Scratch directories: one per use, removed when dropped, kept (and named) when the test failed so its
//! logs can be read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory under the system temp dir, `sy-<label>-<pid>-<n>` (short: unix socket paths inside it are
/// at most 107 bytes). Removed when dropped, unless the thread is panicking: then it is kept and printed.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, empty directory.
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sy-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|error| panic!("create {}: {error}", path.display()));
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for reading: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_and_removed() {
        let first = TempDir::new("unit");
        let second = TempDir::new("unit");
        assert_ne!(first.path(), second.path());
        std::fs::write(first.path().join("file"), "x").expect("write");
        let path = first.path().to_owned();
        drop(first);
        assert!(!path.exists());
    }
}
