//! `logs/kyc-service.log`, rotated when it passes `log.max_size_mb` or the day changes. The live
//! file keeps its name (so `tail -f` works); rotated files get a timestamp suffix and only the
//! newest `log.max_files` are kept. A file that cannot be written is counted and retried, never fatal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Local, NaiveDate};

use crate::config::LogSettings;

/// Lines that could not be written to the file since start (exported as a metric).
pub static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

pub struct RotatingFile {
    dir: PathBuf,
    name: String,
    max_bytes: u64,
    max_files: usize,
    file: Option<File>,
    size: u64,
    day: NaiveDate,
}

impl RotatingFile {
    #[must_use]
    pub fn new(s: &LogSettings) -> Self {
        Self {
            dir: s.dir.clone(),
            name: s.file.clone(),
            max_bytes: s.max_bytes,
            max_files: s.max_files,
            file: None,
            size: 0,
            day: Local::now().date_naive(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            fs::create_dir_all(&self.dir)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path())?;
            self.size = f.metadata()?.len();
            self.day = Local::now().date_naive();
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("file was just opened"))
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let stamp = Local::now().format("%Y%m%d-%H%M%S%.3f");
        fs::rename(self.path(), self.dir.join(format!("{}.{stamp}", self.name)))?;
        let prefix = format!("{}.", self.name);
        let mut rotated: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        rotated.sort();
        let excess = rotated.len().saturating_sub(self.max_files);
        for old in &rotated[..excess] {
            let _ = fs::remove_file(old);
        }
        Ok(())
    }

    fn write_line(&mut self, data: &[u8]) -> io::Result<()> {
        let today = Local::now().date_naive();
        if self.file.is_some()
            && (self.size + data.len() as u64 > self.max_bytes || today != self.day)
            && self.size > 0
        {
            self.rotate()?;
        }
        let f = self.open()?;
        f.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.write_line(data) {
            self.file = None;
            if WRITE_ERRORS.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!(
                    "kyc-service: cannot write {}: {e}; logging to stdout only",
                    self.path().display()
                );
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_rotates_by_size_and_keeps_the_newest() {
        let dir = std::env::temp_dir().join(format!("kyc-logfile-{}", uuid::Uuid::new_v4()));
        let mut f = RotatingFile::new(&LogSettings {
            dir: dir.clone(),
            file: "k.log".into(),
            max_bytes: 100,
            max_files: 2,
        });
        for i in 0..12 {
            f.write_all(format!("line {i:02} {}\n", "x".repeat(40)).as_bytes())
                .expect("write");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut names: Vec<String> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "live file plus two rotated: {names:?}");
        assert!(names.contains(&"k.log".to_owned()));
        let live = fs::read_to_string(dir.join("k.log")).expect("live file");
        assert!(live.contains("line 11"), "{live}");
        assert!(live.len() <= 100);
        fs::remove_dir_all(dir).expect("cleanup");
    }
}
