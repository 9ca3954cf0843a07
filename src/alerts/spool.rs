//! The alert spool in `alerts.spool_dir`: one file per event (`ev-<id>.json`)
//! from the moment it is emitted until its batch window closes, then one file per
//! message (`msg-<alert id>.json`, holding its events) until the relay's 250, plus
//! `quota.json`, the sends of the last 24 h.
//!
//! Every write is a temp file, fsync, rename, fsync of the directory, so a file is
//! either absent or whole. Closing a batch writes the message file before it
//! removes the event files; a crash in between leaves both, and [`Spool::load`]
//! finishes the move (an event in a message file is the message's). A message
//! file therefore never changes once written: a resend carries the same events and
//! the same id. Unparsable files are renamed `*.corrupt` and reported, never
//! deleted.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::Event;

const FORMAT: u32 = 1;
const LEDGER: &str = "quota.json";
const TMP: &str = ".tmp-";

/// An event with its spool id (unique, time-ordered).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SpooledEvent {
    pub id: String,
    pub event: Event,
}

/// One message: its `X-Fulcrum-Alert-Id` and the events it carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Batch {
    pub id: String,
    pub created: SystemTime,
    pub events: Vec<SpooledEvent>,
}

/// What [`Spool::load`] found: closed messages (oldest first), then loose events.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub batches: Vec<Batch>,
    pub events: Vec<SpooledEvent>,
}

impl Loaded {
    pub fn event_count(&self) -> usize {
        self.events.len() + self.batches.iter().map(|b| b.events.len()).sum::<usize>()
    }
}

#[derive(Serialize, Deserialize)]
struct EventFile {
    v: u32,
    #[serde(flatten)]
    ev: SpooledEvent,
}

#[derive(Serialize, Deserialize)]
struct BatchFile {
    v: u32,
    #[serde(flatten)]
    batch: Batch,
}

#[derive(Serialize, Deserialize)]
struct LedgerFile {
    v: u32,
    /// (time, recipients) of each accepted message.
    sends: Vec<(SystemTime, u32)>,
}

/// The spool directory. Cheap to clone; the handle and the sender share it.
#[derive(Clone, Debug)]
pub(crate) struct Spool {
    dir: Arc<PathBuf>,
}

impl Spool {
    /// Creates the directory (mode 0700) if needed and removes temp files a crash
    /// left behind (their write never completed, so their `emit` never returned).
    pub fn open(dir: &Path) -> io::Result<Spool> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| annotate(e, "cannot create the alert spool directory", dir))?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TMP) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Spool {
            dir: Arc::new(dir.to_owned()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one event durably.
    pub fn write_event(&self, ev: &SpooledEvent) -> io::Result<()> {
        check_id(&ev.id)?;
        let file = EventFile {
            v: FORMAT,
            ev: ev.clone(),
        };
        self.write(&event_name(&ev.id), &to_json(&file)?)
    }

    /// Writes a closed message durably, then removes the files of its events.
    pub fn write_batch(&self, batch: &Batch) -> io::Result<()> {
        check_id(&batch.id)?;
        let file = BatchFile {
            v: FORMAT,
            batch: batch.clone(),
        };
        self.write(&batch_name(&batch.id), &to_json(&file)?)?;
        for ev in &batch.events {
            self.remove(&event_name(&ev.id))?;
        }
        self.sync_dir()
    }

    /// Removes a delivered (or dropped) message.
    pub fn remove_batch(&self, id: &str) -> io::Result<()> {
        check_id(id)?;
        self.remove(&batch_name(id))?;
        self.sync_dir()
    }

    /// Removes one event file (an event delivered before its message file existed).
    pub fn remove_event(&self, id: &str) -> io::Result<()> {
        check_id(id)?;
        self.remove(&event_name(id))?;
        self.sync_dir()
    }

    /// Reads back every message and loose event, finishing a batch close that a
    /// crash interrupted. Messages come oldest first, events in emission order.
    pub fn load(&self) -> io::Result<Loaded> {
        let mut out = Loaded::default();
        let mut loose = Vec::new();
        let mut names: Vec<String> = fs::read_dir(&*self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            if !name.ends_with(".json") {
                continue;
            }
            let path = self.dir.join(&name);
            if name.starts_with("msg-") {
                match read_json::<BatchFile>(&path) {
                    Ok(f) if check_batch(&f.batch) => out.batches.push(f.batch),
                    Ok(_) => self.quarantine(&path, "an id is malformed"),
                    Err(e) => self.quarantine(&path, &e.to_string()),
                }
            } else if name.starts_with("ev-") {
                match read_json::<EventFile>(&path) {
                    Ok(f) if check_id(&f.ev.id).is_ok() => loose.push(f.ev),
                    Ok(_) => self.quarantine(&path, "the id is malformed"),
                    Err(e) => self.quarantine(&path, &e.to_string()),
                }
            }
        }
        let batched: HashSet<&str> = out
            .batches
            .iter()
            .flat_map(|b| b.events.iter().map(|e| e.id.as_str()))
            .collect();
        let mut finished_move = false;
        for ev in loose {
            if batched.contains(ev.id.as_str()) {
                self.remove(&event_name(&ev.id))?;
                finished_move = true;
            } else {
                out.events.push(ev);
            }
        }
        if finished_move {
            self.sync_dir()?;
        }
        out.batches
            .sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        out.events.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The sends of the rolling daily quota; empty when absent or unreadable.
    pub fn load_ledger(&self) -> Vec<(SystemTime, u32)> {
        let path = self.dir.join(LEDGER);
        match read_json::<LedgerFile>(&path) {
            Ok(f) => f.sends,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.quarantine(&path, &e.to_string());
                Vec::new()
            }
        }
    }

    pub fn save_ledger(&self, sends: &[(SystemTime, u32)]) -> io::Result<()> {
        let file = LedgerFile {
            v: FORMAT,
            sends: sends.to_vec(),
        };
        self.write(LEDGER, &to_json(&file)?)
    }

    /// temp file, write, fsync, rename, fsync the directory.
    fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self
            .dir
            .join(format!("{TMP}{name}-{:08x}", fastrand::u32(..)));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, self.dir.join(name))?;
            self.sync_dir()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| annotate(e, "cannot write to the alert spool", &self.dir))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(annotate(e, "cannot remove from the alert spool", &self.dir))
            }
            _ => Ok(()),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&*self.dir)?.sync_all()
    }

    fn quarantine(&self, path: &Path, why: &str) {
        let mut to = path.as_os_str().to_owned();
        to.push(".corrupt");
        let renamed = fs::rename(path, &to);
        tracing::error!(
            file = %path.display(),
            error = why,
            renamed = renamed.is_ok(),
            "alerts: unreadable spool file set aside as *.corrupt"
        );
    }
}

fn event_name(id: &str) -> String {
    format!("ev-{id}.json")
}

fn batch_name(id: &str) -> String {
    format!("msg-{id}.json")
}

/// Ids become file names: only ASCII letters, digits and `-`.
fn check_id(id: &str) -> io::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed alert id",
        ))
    }
}

fn check_batch(b: &Batch) -> bool {
    check_id(&b.id).is_ok() && b.events.iter().all(|e| check_id(&e.id).is_ok())
}

fn to_json<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(io::Error::other)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn annotate(e: io::Error, what: &str, dir: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn ev(id: &str, target: &str) -> SpooledEvent {
        SpooledEvent {
            id: id.into(),
            event: Event::TargetUnhealthy {
                group: "web".into(),
                target: target.into(),
                zone: "zone-a".into(),
                reason: "Target.Timeout".into(),
                description: "Request timed out".into(),
                consecutive_failures: 2,
                at: UNIX_EPOCH + Duration::from_secs(1_795_538_400),
            },
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_read_remove_events() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(&d.path().join("spool")).unwrap();
        s.write_event(&ev("2-b", "10.0.0.2:80")).unwrap();
        s.write_event(&ev("1-a", "10.0.0.1:80")).unwrap();
        let l = s.load().unwrap();
        assert_eq!(
            l.events,
            vec![ev("1-a", "10.0.0.1:80"), ev("2-b", "10.0.0.2:80")]
        );
        assert!(l.batches.is_empty());
        s.remove_event("1-a").unwrap();
        s.remove_event("1-a").unwrap(); // gone already: fine
        assert_eq!(s.load().unwrap().events, vec![ev("2-b", "10.0.0.2:80")]);
        assert_eq!(files(s.dir()), ["ev-2-b.json"]);
    }

    #[test]
    fn crash_without_removal_keeps_everything() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(d.path()).unwrap();
            s.write_event(&ev("1-a", "t1")).unwrap();
            s.write_batch(&Batch {
                id: "abc".into(),
                created: UNIX_EPOCH,
                events: vec![ev("0-z", "t0")],
            })
            .unwrap();
            // "crash": dropped with nothing removed, plus a half-written temp file.
            fs::write(d.path().join(".tmp-ev-9-x.json-0000"), b"{\"v\":1,").unwrap();
        }
        let s = Spool::open(d.path()).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.events, vec![ev("1-a", "t1")]);
        assert_eq!(l.batches.len(), 1);
        assert_eq!(l.batches[0].events, vec![ev("0-z", "t0")]);
        assert_eq!(l.event_count(), 2);
        assert_eq!(files(d.path()), ["ev-1-a.json", "msg-abc.json"]);
    }

    #[test]
    fn batch_close_interrupted_between_write_and_removal_is_finished() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let (a, b) = (ev("1-a", "t1"), ev("2-b", "t2"));
        s.write_event(&a).unwrap();
        s.write_event(&b).unwrap();
        // The message file was written but the crash came before the removals.
        let batch = Batch {
            id: "m1".into(),
            created: UNIX_EPOCH,
            events: vec![a.clone()],
        };
        let file = BatchFile {
            v: FORMAT,
            batch: batch.clone(),
        };
        s.write("msg-m1.json", &to_json(&file).unwrap()).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.batches, vec![batch]);
        assert_eq!(l.events, vec![b]);
        assert_eq!(files(d.path()), ["ev-2-b.json", "msg-m1.json"]);
    }

    #[test]
    fn batch_write_moves_events_and_removal_empties() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        s.write_event(&ev("1-a", "t1")).unwrap();
        let b = Batch {
            id: "m".into(),
            created: UNIX_EPOCH,
            events: vec![ev("1-a", "t1")],
        };
        s.write_batch(&b).unwrap();
        assert_eq!(files(d.path()), ["msg-m.json"]);
        s.remove_batch("m").unwrap();
        assert!(files(d.path()).is_empty());
    }

    #[test]
    fn batches_load_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        for (id, secs) in [("zz", 1), ("aa", 3), ("mm", 2)] {
            s.write_batch(&Batch {
                id: id.into(),
                created: UNIX_EPOCH + Duration::from_secs(secs),
                events: vec![ev(&format!("{secs}-e"), "t")],
            })
            .unwrap();
        }
        let ids: Vec<String> = s
            .load()
            .unwrap()
            .batches
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(ids, ["zz", "mm", "aa"]);
    }

    #[test]
    fn corrupt_files_are_set_aside_not_lost() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        fs::write(d.path().join("ev-1-a.json"), b"not json").unwrap();
        fs::write(d.path().join("msg-x.json"), b"{}").unwrap();
        fs::write(d.path().join("README"), b"ignored").unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.event_count(), 0);
        assert_eq!(
            files(d.path()),
            ["README", "ev-1-a.json.corrupt", "msg-x.json.corrupt"]
        );
    }

    #[test]
    fn ids_cannot_escape_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        assert!(s.write_event(&ev("../x", "t")).is_err());
        assert!(s.remove_batch("a/b").is_err());
        assert!(s.remove_event("").is_err());
    }

    #[test]
    fn ledger_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        assert!(s.load_ledger().is_empty());
        let sends = vec![(UNIX_EPOCH + Duration::from_millis(1500), 3)];
        s.save_ledger(&sends).unwrap();
        assert_eq!(Spool::open(d.path()).unwrap().load_ledger(), sends);
        fs::write(d.path().join(LEDGER), b"[").unwrap();
        assert!(s.load_ledger().is_empty());
        assert!(d.path().join("quota.json.corrupt").exists());
    }

    #[test]
    fn directory_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        Spool::open(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
