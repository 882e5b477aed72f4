//! `serve --watch`: reloads when the configuration file, or a component
//! `.wasm` file it names, changes on disk.
//!
//! The files are polled (size, modification time and inode, twice a
//! second) rather than watched through inotify: polling sees an editor's
//! write-to-temp-then-rename the same as an in-place write, works on every
//! filesystem, and needs no dependency. A change is acted on once the
//! files have stopped changing for one more poll, so a half-written file
//! is not read. Which files are watched follows the configuration that
//! serves: a reload that names new components watches those.
//!
//! A change that makes the configuration invalid is refused like any
//! reload (logged; the previous configuration keeps serving), and is not
//! retried until the files change again.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Reloader;

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// What a file looked like at one poll (`None`: it was not there).
type Fingerprint = Vec<(PathBuf, Option<(u64, i64, i64, u64)>)>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths
        .iter()
        .map(|p| {
            let seen = std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()));
            (p.clone(), seen)
        })
        .collect()
}

impl Reloader {
    /// Polls the watched files every `every` and reloads on a change.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut paths = this.watched_files().await;
            let mut settled = fingerprint(&paths);
            tracing::info!(
                files = paths.len(),
                "watching the configuration for changes"
            );
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut pending: Option<Fingerprint> = None;
            loop {
                tick.tick().await;
                let now = fingerprint(&paths);
                if now == settled {
                    pending = None;
                    continue;
                }
                // Act only once two polls agree: the write has finished.
                if pending.as_ref() != Some(&now) {
                    pending = Some(now);
                    continue;
                }
                pending = None;
                this.reload_and_log("a watched file changed").await;
                paths = this.watched_files().await;
                settled = fingerprint(&paths);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_a_rename_and_a_removal_all_change_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.toml");
        std::fs::write(&a, "one").unwrap();
        let paths = vec![a.clone()];
        let first = fingerprint(&paths);
        assert_eq!(first, fingerprint(&paths), "nothing changed");
        // Same size, written again through a rename (as editors do).
        let tmp = dir.path().join("a.tmp");
        std::fs::write(&tmp, "two").unwrap();
        std::fs::rename(&tmp, &a).unwrap();
        let renamed = fingerprint(&paths);
        assert_ne!(first, renamed);
        std::fs::remove_file(&a).unwrap();
        assert_eq!(fingerprint(&paths)[0].1, None);
    }
}
