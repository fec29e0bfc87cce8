//! A fragmented MP4 file with one H.264 track (an `avc3` sample entry:
//! parameter sets also travel in the samples, so the picture size may change
//! at any IDR picture): `ftyp` and `moov` (with `mvex`) first, then `moof`+`mdat` fragments, each made visible only once
//! written whole; `mfra` and the real durations (patched into the `moov` in
//! place) on finish.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use mp4_atom::{
    Avc3, Avcc, Codec, Colr, Dinf, Dref, Encode, FragmentInfo, Ftyp, Hdlr, Matrix, Mdhd, Mdia, Mfhd, Mfra, Mfro, Minf,
    Moof, Moov, Mvex, Mvhd, Pasp, Stbl, Stco, Stsd, Tfdt, Tfhd, Tfra, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url,
    Visual, Vmhd,
};

use super::VideoError;
use super::convert::Geometry;
use super::h264::Sample;

const TRACK_ID: u32 = 1;

/// `sample_flags` of a sync sample: depends on no other sample.
const FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_flags` of other samples: depends on others, not a sync sample.
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// An MP4 file being written.
pub(super) struct Mp4Writer {
    path: PathBuf,
    file: File,
    sync: bool,
    moov: Moov,
    moov_at: u64,
    moov_len: usize,
    /// Bytes written so far: where the next box goes.
    size: u64,
    sequence: u32,
    /// The fragment being collected: samples and their durations.
    run: Vec<(Sample, u32)>,
    run_start: u64,
    /// Decode time after the last sample pushed.
    time: u64,
    index: Vec<FragmentInfo>,
    samples: u64,
    keyframes: u64,
}

impl Mp4Writer {
    /// Creates `path` (never overwriting) and writes its header: the first
    /// picture's size and parameter sets in the sample entry, `timescale`
    /// media units a second.
    pub(super) fn create(
        path: &Path,
        geometry: Geometry,
        sps: &[u8],
        pps: &[u8],
        timescale: u32,
        sync: bool,
    ) -> Result<Mp4Writer, VideoError> {
        let io = |source| VideoError::Io { path: path.to_owned(), source };
        let moov = movie(geometry, sps, pps, timescale)?;
        let ftyp = Ftyp {
            major_brand: b"isom".into(),
            minor_version: 0x200,
            compatible_brands: vec![b"isom".into(), b"iso6".into(), b"mp41".into()],
        };
        let mut header = Vec::new();
        ftyp.encode(&mut header).map_err(mux)?;
        let moov_at = header.len() as u64;
        moov.encode(&mut header).map_err(mux)?;
        let moov_len = header.len() - moov_at as usize;

        let mut file = File::options().write(true).create_new(true).open(path).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        if sync {
            file.sync_data().map_err(io)?;
            sync_dir(path);
        }
        Ok(Mp4Writer {
            path: path.to_owned(),
            file,
            sync,
            moov,
            moov_at,
            moov_len,
            size: header.len() as u64,
            sequence: 0,
            run: Vec::new(),
            run_start: 0,
            time: 0,
            index: Vec::new(),
            samples: 0,
            keyframes: 0,
        })
    }

    /// Bytes written so far.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    pub(super) fn samples(&self) -> u64 {
        self.samples
    }

    pub(super) fn keyframes(&self) -> u64 {
        self.keyframes
    }

    /// Adds a sample lasting `duration` ticks to the current fragment.
    pub(super) fn push(&mut self, sample: Sample, duration: u64) {
        if self.run.is_empty() {
            self.run_start = self.time;
        }
        let duration = u32::try_from(duration).unwrap_or(u32::MAX);
        self.time += u64::from(duration);
        self.samples += 1;
        self.keyframes += u64::from(sample.keyframe);
        self.run.push((sample, duration));
    }

    /// Writes the current fragment (if any); returns the bytes written.
    pub(super) fn flush(&mut self) -> Result<u64, VideoError> {
        if self.run.is_empty() {
            return Ok(0);
        }
        let fragment = self.fragment()?;
        self.append(fragment)
    }

    /// The current fragment as bytes (`moof` then `mdat`), to be written
    /// next; empties it.
    pub(super) fn fragment(&mut self) -> Result<Vec<u8>, VideoError> {
        self.sequence += 1;
        let entries: Vec<TrunEntry> = self
            .run
            .iter()
            .map(|(sample, duration)| TrunEntry {
                duration: Some(*duration),
                size: Some(sample.data.len() as u32),
                flags: Some(if sample.keyframe { FLAGS_SYNC } else { FLAGS_NON_SYNC }),
                cts: None,
            })
            .collect();
        let mut moof = Moof {
            mfhd: Mfhd { sequence_number: self.sequence },
            traf: vec![Traf {
                tfhd: Tfhd { track_id: TRACK_ID, default_base_is_moof: true, ..Default::default() },
                tfdt: Some(Tfdt { base_media_decode_time: self.run_start }),
                trun: vec![Trun { data_offset: Some(0), samples: entries.into() }],
                ..Default::default()
            }],
        };
        let mut moof_bytes = Vec::new();
        moof.encode(&mut moof_bytes).map_err(mux)?;
        // The samples start after the moof and the mdat header.
        let data_offset = i32::try_from(moof_bytes.len() + 8).map_err(|_| VideoError::Mux("moof too large".into()))?;
        moof.traf[0].trun[0].data_offset = Some(data_offset);
        moof_bytes.clear();
        moof.encode(&mut moof_bytes).map_err(mux)?;

        let payload: usize = self.run.iter().map(|(sample, _)| sample.data.len()).sum();
        let mdat_size =
            u32::try_from(payload + 8).map_err(|_| VideoError::Mux("fragment over 4 GiB".into()))?.to_be_bytes();
        let mut bytes = Vec::with_capacity(moof_bytes.len() + 8 + payload);
        bytes.extend_from_slice(&moof_bytes);
        bytes.extend_from_slice(&mdat_size);
        bytes.extend_from_slice(b"mdat");
        for (sample, _) in self.run.drain(..) {
            bytes.extend_from_slice(&sample.data);
        }
        self.index.push(FragmentInfo {
            time: self.run_start,
            moof_offset: self.size,
            traf_number: 1,
            trun_number: 1,
            sample_delta: 1,
        });
        Ok(bytes)
    }

    /// Writes the last fragment and the `mfra` index, sets the durations in
    /// the `moov`, syncs. Returns the bytes written (the `moov` rewrite not
    /// counted).
    pub(super) fn finish(mut self) -> Result<u64, VideoError> {
        let mut written = self.flush()?;

        let mut mfra =
            Mfra { tfra: vec![Tfra { track_id: TRACK_ID, entries: self.index.clone() }], mfro: Mfro::default() };
        let mut bytes = Vec::new();
        mfra.encode(&mut bytes).map_err(mux)?;
        mfra.mfro.parent_size = bytes.len() as u32;
        bytes.clear();
        mfra.encode(&mut bytes).map_err(mux)?;
        written += self.append(bytes)?;

        // Durations: their boxes always use 64-bit fields, so the moov keeps
        // its size and is rewritten in place (one write within the first
        // page: a crash leaves either the old one or the new one).
        self.moov.mvhd.duration = self.time;
        self.moov.trak[0].tkhd.duration = self.time;
        self.moov.trak[0].mdia.mdhd.duration = self.time;
        let mut moov = Vec::new();
        self.moov.encode(&mut moov).map_err(mux)?;
        if moov.len() == self.moov_len {
            self.write_at(self.moov_at, &moov)?;
        } else {
            tracing::warn!(path = %self.path.display(), "moov changed size; durations left unset");
        }
        if self.sync {
            self.file.sync_all().map_err(|source| VideoError::Io { path: self.path.clone(), source })?;
        }
        Ok(written)
    }

    /// Appends `bytes` (whole boxes) so that a crash part-way leaves only a
    /// trailing `free` box, which readers skip: they are written as one
    /// `free` box covering them all (then synced), which then becomes the
    /// real boxes when the first header is rewritten (8 bytes, one page).
    /// A half-written `moof` or `mdat` would make FFmpeg refuse the file.
    fn append(&mut self, mut bytes: Vec<u8>) -> Result<u64, VideoError> {
        let at = self.size;
        let header = hide(&mut bytes)?;
        let io = |source| VideoError::Io { path: self.path.clone(), source };
        self.file.write_all(&bytes).map_err(io)?;
        if self.sync {
            self.file.sync_data().map_err(io)?;
        }
        self.size += bytes.len() as u64;
        self.write_at(at, &header)?;
        if self.sync {
            self.file.sync_data().map_err(|source| VideoError::Io { path: self.path.clone(), source })?;
        }
        tracing::trace!(path = %self.path.display(), offset = at, bytes = bytes.len(), "boxes written");
        Ok(bytes.len() as u64)
    }

    /// Overwrites bytes at `offset`, then goes back to the end.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), VideoError> {
        let io = |source| VideoError::Io { path: self.path.clone(), source };
        self.file.seek(SeekFrom::Start(offset)).map_err(io)?;
        self.file.write_all(bytes).map_err(io)?;
        self.file.seek(SeekFrom::Start(self.size)).map_err(io)?;
        Ok(())
    }
}

/// Turns `bytes` (boxes) into one `free` box of the same length; returns
/// the first box's header that it replaced.
pub(super) fn hide(bytes: &mut [u8]) -> Result<[u8; 8], VideoError> {
    let len = u32::try_from(bytes.len()).map_err(|_| VideoError::Mux("boxes over 4 GiB".into()))?;
    let header: [u8; 8] = bytes
        .get(..8)
        .and_then(|header| header.try_into().ok())
        .ok_or_else(|| VideoError::Mux("no box to write".into()))?;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    bytes[4..8].copy_from_slice(b"free");
    Ok(header)
}

/// The `moov` of an empty fragmented movie with one H.264 track of the
/// first picture's size (the track's display size; later pictures of other
/// sizes are shown at their own size, square pixels).
fn movie(geometry: Geometry, sps: &[u8], pps: &[u8], timescale: u32) -> Result<Moov, VideoError> {
    let (width, height) = (geometry.coded_width, geometry.coded_height);
    let (w16, h16) = (
        u16::try_from(width).map_err(|_| VideoError::Mux("width over 65535".into()))?,
        u16::try_from(height).map_err(|_| VideoError::Mux("height over 65535".into()))?,
    );
    let avc3 = Avc3 {
        visual: Visual {
            data_reference_index: 1,
            width: w16,
            height: h16,
            horizresolution: 72.into(),
            vertresolution: 72.into(),
            frame_count: 1,
            compressor: "".into(),
            depth: 24,
        },
        avcc: Avcc::new(sps, pps).map_err(mux)?,
        // BT.709, limited range: as converted, and as in the SPS's VUI.
        colr: Some(Colr::Nclx {
            colour_primaries: 1,
            transfer_characteristics: 1,
            matrix_coefficients: 1,
            full_range_flag: false,
        }),
        pasp: Some(Pasp { h_spacing: 1, v_spacing: 1 }),
        ..Default::default()
    };
    Ok(Moov {
        mvhd: Mvhd {
            creation_time: 0,
            modification_time: 0,
            timescale,
            duration: 0,
            rate: 1.into(),
            volume: 1.into(),
            matrix: Matrix::default(),
            next_track_id: TRACK_ID + 1,
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: TRACK_ID,
                default_sample_description_index: 1,
                default_sample_duration: 0,
                default_sample_size: 0,
                default_sample_flags: 0,
            }],
        }),
        trak: vec![Trak {
            tkhd: Tkhd {
                track_id: TRACK_ID,
                enabled: true,
                in_movie: true,
                matrix: Matrix::default(),
                width: w16.into(),
                height: h16.into(),
                ..Default::default()
            },
            mdia: Mdia {
                mdhd: Mdhd { timescale, language: "und".into(), ..Default::default() },
                hdlr: Hdlr { handler: b"vide".into(), name: "spicetap video".into() },
                minf: Minf {
                    vmhd: Some(Vmhd::default()),
                    dinf: Dinf { dref: Dref { entries: vec![Url::default().into()] } },
                    stbl: Stbl {
                        stsd: Stsd { codecs: vec![Codec::Avc3(avc3)] },
                        stco: Some(Stco::default()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn mux(error: mp4_atom::Error) -> VideoError {
    VideoError::Mux(error.to_string())
}

/// Makes a new file's directory entry durable (best effort).
fn sync_dir(path: &Path) {
    let Some(dir) = path.parent() else { return };
    if let Err(error) = File::open(dir).and_then(|dir| dir.sync_all()) {
        tracing::debug!(%error, dir = %dir.display(), "cannot sync the directory");
    }
}
