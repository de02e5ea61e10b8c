//! A directory's entries in compact form — read from the directory
//! ([`scan`], its memory charged as it grows), or built from a storage's
//! listing — and their JSON, encoded a piece at a time ([`JsonPieces`]).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use cap_std::fs::Dir;
use framegate_wire::budget::{Permit, SharedBudget};

use super::super::LATEST_HTTP_DATE;
use crate::answer::CommandError;
use crate::tree::{RESERVED_COMPONENT, TEMP_PREFIX, io_error};

/// About this many bytes of JSON are encoded at a time, as the client
/// takes them.
pub(super) const LISTING_PIECE: usize = 64 * 1024;

/// What reading a directory found.
#[derive(Debug)]
pub(super) enum Scan {
    /// Its entries, sorted (none kept when only counted), and their charge
    /// to the listing memory.
    Listed(Listing, Permit),
    /// More entries than the bound.
    TooLarge,
    /// The listing memory could not hold it.
    Busy,
}

/// Reads the directory `rel` below `root`: entries (when `keep`) with their
/// metadata, reserved names hidden, sorted bytewise by name; at most `max`
/// (one more is read, then it is [`Scan::TooLarge`]). The listing's memory
/// (the buffers' capacity) is charged to `budget` as it grows; when the
/// budget cannot hold it, it is [`Scan::Busy`] — or [`Scan::TooLarge`] if
/// it would not fit even alone.
pub(super) fn scan(
    root: &Dir,
    rel: &Path,
    max: usize,
    keep: bool,
    budget: &SharedBudget,
) -> Result<Scan, CommandError> {
    let mut listing = Listing::default();
    let Some(mut charge) = budget.try_take(0) else {
        return Ok(Scan::Busy);
    };
    let mut count = 0usize;
    for entry in root.read_dir(rel).map_err(|e| io_error(&e, rel))? {
        let entry = entry.map_err(|e| io_error(&e, rel))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == RESERVED_COMPONENT || name.starts_with(TEMP_PREFIX) {
            continue;
        }
        if count == max {
            return Ok(Scan::TooLarge);
        }
        count += 1;
        if keep {
            // Not followed: a symbolic link is listed as `other`.
            let meta = entry.metadata().map_err(|e| io_error(&e, rel))?;
            if !listing.push(&name, &meta) {
                return Ok(Scan::TooLarge);
            }
            if let Some(refused) = listing.charge(&mut charge, budget) {
                return Ok(refused);
            }
        }
    }
    Ok(listing.done(charge))
}

/// What a listing shows an entry as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Directory,
    Other,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Directory => "directory",
            Kind::Other => "other",
        }
    }
}

/// One entry of a [`Listing`]; its name is `names[name_at..][..name_len]`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Last modification, Unix seconds (as `stat` answers tell it).
    mtime: f64,
    /// Size in bytes (shown for files only).
    size: u64,
    name_at: u32,
    name_len: u16,
    kind: Kind,
}

/// A directory's entries in compact form: the names back to back in one
/// buffer, a small fixed-size record per entry.
#[derive(Debug, Default)]
pub(super) struct Listing {
    names: String,
    entries: Vec<Entry>,
}

impl Listing {
    /// Adds an entry; false if the names outgrow the buffer's offsets.
    fn push(&mut self, name: &str, meta: &cap_std::fs::Metadata) -> bool {
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Directory
        } else {
            Kind::Other
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.push_entry(name, kind, meta.len(), mtime)
    }

    /// Adds an entry of `kind`, `size` bytes, modified at `mtime` (Unix
    /// seconds); false if the names outgrow the buffer's offsets.
    pub(super) fn push_entry(&mut self, name: &str, kind: Kind, size: u64, mtime: f64) -> bool {
        let (Ok(name_at), Ok(name_len)) =
            (u32::try_from(self.names.len()), u16::try_from(name.len()))
        else {
            return false;
        };
        if u32::try_from(self.names.len() + name.len()).is_err() {
            return false;
        }
        self.names.push_str(name);
        self.entries.push(Entry {
            mtime,
            size,
            name_at,
            name_len,
            kind,
        });
        true
    }

    /// Grows `charge` (from `budget`) to the buffers' footprint; the
    /// refusal if it cannot: too large if it would not fit even alone,
    /// else busy.
    pub(super) fn charge(&self, charge: &mut Permit, budget: &SharedBudget) -> Option<Scan> {
        let footprint = self.footprint();
        if footprint > charge.amount() && !charge.try_grow(footprint - charge.amount()) {
            return Some(if footprint > budget.limit() {
                Scan::TooLarge
            } else {
                Scan::Busy
            });
        }
        None
    }

    /// Sorted, shrunk, and `charge` cut to what it then holds.
    pub(super) fn done(mut self, mut charge: Permit) -> Scan {
        self.sort();
        charge.give_back(charge.amount().saturating_sub(self.footprint()));
        Scan::Listed(self, charge)
    }

    /// Bytes its buffers hold (their capacity).
    fn footprint(&self) -> usize {
        self.names.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    fn name(&self, entry: &Entry) -> &str {
        name_in(&self.names, entry)
    }

    /// Sorts bytewise by name; equal names (two names that were not UTF-8
    /// may read the same) keep the directory's order.
    fn sort(&mut self) {
        let names = &self.names;
        self.entries.sort_unstable_by(|a, b| {
            name_in(names, a)
                .as_bytes()
                .cmp(name_in(names, b).as_bytes())
                .then(a.name_at.cmp(&b.name_at))
        });
        self.names.shrink_to_fit();
        self.entries.shrink_to_fit();
    }
}

fn name_in<'a>(names: &'a str, entry: &Entry) -> &'a str {
    let start = entry.name_at as usize;
    names
        .get(start..start + usize::from(entry.name_len))
        .unwrap_or_default()
}

/// One entry in JSON. Fields in the order serde_json writes a `Value`
/// object's keys (sorted), so the output is what the listing always was.
#[derive(serde::Serialize)]
struct Item<'a> {
    mtime: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// A listing's JSON array, encoded a piece at a time.
#[derive(Debug)]
pub(super) struct JsonPieces {
    listing: Listing,
    /// The next entry to encode.
    next: usize,
    started: bool,
    done: bool,
    /// Reused for each entry's date.
    date: String,
}

impl JsonPieces {
    pub(super) fn new(listing: Listing) -> JsonPieces {
        JsonPieces {
            listing,
            next: 0,
            started: false,
            done: false,
            date: String::new(),
        }
    }

    /// The next piece of about [`LISTING_PIECE`] bytes (the last one may
    /// be shorter), or `None` after the last.
    pub(super) fn next_piece(&mut self, max: usize) -> Result<Option<Bytes>, serde_json::Error> {
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(max + 1024);
        if !self.started {
            out.push(b'[');
            self.started = true;
        }
        while out.len() < max {
            let Some(entry) = self.listing.entries.get(self.next) else {
                out.push(b']');
                self.done = true;
                break;
            };
            if self.next > 0 {
                out.push(b',');
            }
            self.date.clear();
            let modified = Duration::try_from_secs_f64(entry.mtime.max(0.0))
                .unwrap_or_default()
                .min(LATEST_HTTP_DATE);
            let _ = write!(
                self.date,
                "{}",
                httpdate::HttpDate::from(UNIX_EPOCH + modified)
            );
            let item = Item {
                mtime: &self.date,
                name: self.listing.name(entry),
                size: (entry.kind == Kind::File).then_some(entry.size),
                kind: entry.kind.as_str(),
            };
            serde_json::to_writer(&mut out, &item)?;
            self.next += 1;
        }
        Ok(Some(Bytes::from(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(names: &[&str]) -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        for name in names {
            std::fs::write(tmp.path().join(name), name.as_bytes()).unwrap();
        }
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        (tmp, dir)
    }

    fn json(listing: Listing) -> Vec<u8> {
        let mut pieces = JsonPieces::new(listing);
        let mut out = Vec::new();
        while let Some(piece) = pieces.next_piece(LISTING_PIECE).unwrap() {
            out.extend_from_slice(&piece);
        }
        out
    }

    fn roomy() -> SharedBudget {
        SharedBudget::new(1 << 20)
    }

    #[test]
    fn a_listing_is_charged_its_buffers_until_dropped() {
        let names: Vec<String> = (0..100).map(|i| format!("name-{i:04}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_tmp, dir) = dir_with(&names);
        let budget = SharedBudget::new(64 * 1024);
        let Scan::Listed(listing, charge) =
            scan(&dir, Path::new("."), 1000, true, &budget).unwrap()
        else {
            panic!("listed")
        };
        assert_eq!(charge.amount(), listing.footprint());
        assert!(listing.footprint() >= 100 * (9 + std::mem::size_of::<Entry>()));
        assert_eq!(budget.in_use(), charge.amount());
        // Another one does not fit beside it, but would alone: busy.
        let held = budget.try_take(budget.available()).unwrap();
        assert!(matches!(
            scan(&dir, Path::new("."), 1000, true, &budget).unwrap(),
            Scan::Busy
        ));
        drop((held, listing, charge));
        assert_eq!(budget.in_use(), 0);
        // One that could never fit is too large, whatever else holds.
        let tiny = SharedBudget::new(256);
        assert!(matches!(
            scan(&dir, Path::new("."), 1000, true, &tiny).unwrap(),
            Scan::TooLarge
        ));
        assert_eq!(tiny.in_use(), 0);
    }

    #[test]
    fn more_than_max_is_too_large_and_hidden_names_do_not_count() {
        let (_tmp, dir) = dir_with(&["a", "b", "c", ".framegate-upload-x"]);
        std::fs::create_dir(_tmp.path().join(".framegate")).unwrap();
        assert!(matches!(
            scan(&dir, Path::new("."), 2, true, &roomy()).unwrap(),
            Scan::TooLarge
        ));
        assert!(matches!(
            scan(&dir, Path::new("."), 2, false, &roomy()).unwrap(),
            Scan::TooLarge
        ));
        let Scan::Listed(listing, _) = scan(&dir, Path::new("."), 3, true, &roomy()).unwrap()
        else {
            panic!("three entries fit")
        };
        let names: Vec<&str> = listing.entries.iter().map(|e| listing.name(e)).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn counting_keeps_nothing() {
        let (_tmp, dir) = dir_with(&["a", "b"]);
        let Scan::Listed(listing, _) = scan(&dir, Path::new("."), 10, false, &roomy()).unwrap()
        else {
            panic!("listed")
        };
        assert!(listing.entries.is_empty() && listing.names.is_empty());
    }

    #[test]
    fn empty_directory_is_an_empty_array() {
        let (_tmp, dir) = dir_with(&[]);
        let Scan::Listed(listing, _) = scan(&dir, Path::new("."), 10, true, &roomy()).unwrap()
        else {
            panic!("listed")
        };
        assert_eq!(json(listing), b"[]");
    }

    #[test]
    fn pieces_are_bounded_and_join_to_one_array() {
        let names: Vec<String> = (0..3000).map(|i| format!("{i:0>40}\"\\é")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_tmp, dir) = dir_with(&refs);
        let Scan::Listed(listing, _) = scan(
            &dir,
            Path::new("."),
            10_000,
            true,
            &SharedBudget::new(64 << 20),
        )
        .unwrap() else {
            panic!("listed")
        };
        let mut pieces = JsonPieces::new(listing);
        let mut out = Vec::new();
        let mut count = 0;
        while let Some(piece) = pieces.next_piece(LISTING_PIECE).unwrap() {
            assert!(piece.len() < LISTING_PIECE + 1024, "{}", piece.len());
            out.extend_from_slice(&piece);
            count += 1;
        }
        assert!(count > 2, "{count} pieces");
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
        let mut sorted = names.clone();
        sorted.sort();
        let got: Vec<&str> = parsed.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(got, sorted);
    }

    #[test]
    fn far_future_mtime_is_clamped_not_a_panic() {
        let listing = Listing {
            names: "x".into(),
            entries: vec![Entry {
                mtime: 1e15,
                size: 1,
                name_at: 0,
                name_len: 1,
                kind: Kind::File,
            }],
        };
        let out = String::from_utf8(json(listing)).unwrap();
        assert!(out.contains("Fri, 31 Dec 9999 23:59:59 GMT"), "{out}");
    }
}
