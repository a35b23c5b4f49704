//! Opening a store directory: manifest, leftover cleanup, catalog and statistics rebuild.

use std::path::Path;
use std::sync::Arc;

use super::catalog::Catalog;
use super::events_file::EventFile;
use super::fsutil::{corrupt, io_err};
use super::manifest::{Manifest, events_name, points_name, results_name};
use super::merge::file_stats;
use super::points_file::PointFile;
use super::results_file::ResultFile;
use super::{EmbeddedStoreOptions, State, migrate};
use datanexus_store::Result;

/// Loads the state of the store in `dir` (creating the directory if needed).
///
/// # Errors
/// I/O failures; [`datanexus_store::Error::Corrupt`] for an unreadable manifest or live file.
pub(super) fn load(dir: &Path, options: &EmbeddedStoreOptions) -> Result<State> {
    std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let manifest = Manifest::load(dir)?;
    manifest.remove_unlisted(dir)?;
    let mut catalog = Catalog {
        measurements: manifest.measurements.clone(),
        ..Catalog::default()
    };
    let mut points = Vec::with_capacity(manifest.points.len());
    for f in &manifest.points {
        let path = dir.join(points_name(f.seq));
        if !path.exists() {
            return Err(corrupt(&path)("listed in the manifest but missing".into()));
        }
        let (file, keys) = PointFile::open(&path, f.seq)?;
        for (id, key) in keys {
            catalog.ensure_series(id, || key);
        }
        points.push(Arc::new(file));
    }
    let mut event_files = Vec::with_capacity(manifest.events.len());
    for f in &manifest.events {
        let path = dir.join(events_name(f.seq));
        if !path.exists() {
            return Err(corrupt(&path)("listed in the manifest but missing".into()));
        }
        event_files.push(Arc::new(EventFile::open(&path, f.seq)?));
    }
    let mut result_files = Vec::with_capacity(manifest.results.len());
    for f in &manifest.results {
        let path = dir.join(results_name(f.seq));
        if !path.exists() {
            return Err(corrupt(&path)("listed in the manifest but missing".into()));
        }
        result_files.push(Arc::new(ResultFile::open(&path, f.seq)?));
    }
    let mut next_seq = manifest.next_seq;
    if !manifest.results_apart && !event_files.is_empty() {
        migrate::results_out_of_events(
            dir,
            options,
            &points,
            &mut event_files,
            &mut result_files,
            &mut next_seq,
            &manifest,
        )?;
    }
    let ids: Vec<u64> = catalog.series.keys().copied().collect();
    for (id, stats) in file_stats(&ids, &points)? {
        if let Some(entry) = catalog.series.get_mut(&id) {
            entry.files = stats;
        }
    }
    Ok(State {
        catalog,
        points,
        event_files,
        result_files,
        next_seq,
        ..State::default()
    })
}
