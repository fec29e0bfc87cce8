//! GLZ ("global LZ"): LZ whose matches may also copy from earlier images of a session-wide window.
//!
//! # Format
//!
//! Written by the spice server's `glz_encode` (`server/glz-encoder.c`), read by spice-gtk's
//! `decode-glz.c`. The header is big-endian: magic [`LZ_MAGIC`] (u32), version
//! [`LZ_VERSION`] (u32), one byte holding the [`LzType`] in its low 4 bits and
//! `top_down` in the bits above, width, height, stride (u32 each), the image id (u64) and
//! `win_head_dist` (u32): the image `id - win_head_dist` is the oldest one the server may still refer to.
//!
//! The body is an LZ-like stream (see [`super`]) where a match carries a length, a pixel offset and an
//! image distance. With distance 0 the offset (biased by one) counts back from the current pixel of the
//! image being decoded; otherwise the source is the image `id - distance` of the window, starting at that
//! pixel offset in its decoded buffer. Those buffers are kept in *stream order* (for a bottom-up image,
//! its bottom row first), as spice-gtk indexes its surfaces' memory.
//!
//! Only the RGB types are GLZ-coded by the server (`image_encoders_compress_glz` asserts an RGB bitmap);
//! spice-gtk decodes them all to 32-bit words (RGB16 widened), RGBA with an extra alpha pass whose matches
//! copy alpha bytes only. spice-gtk calls its palette decoders with no palette and indexes past its
//! decoder table for XXXA/A8, so those types are refused here ([`GlzError::UnsupportedType`]).
//!
//! # Window rule (spice-gtk `decode-glz.c`)
//!
//! spice-gtk keeps decoded images in a table keyed by id, shared by all display channels of the session.
//! Besides the images it tracks two counters: `tail_gap`, the first id not yet received in an unbroken run
//! of ids counted from 0 (it only moves forwards, over ids that are present and not above the id just
//! inserted), and `oldest`, the first id not yet released. After an image is decoded and inserted, it
//! takes the image just below `tail_gap` (the newest one with no gap before it, which is not necessarily
//! the image just decoded when images arrive out of order from several display channels) and releases
//! every id from `oldest` up to, not including, that image's `id - win_head_dist`; `oldest` then becomes
//! that value. Images that arrive with an id already below `oldest` are kept but never released by the
//! rule. An id already present is replaced. A reference to an image not in the table makes spice-gtk
//! wait for another display channel to deliver it; here it is [`GlzError::MissingImage`] and, as with every
//! error, the window is left unchanged, so the caller may retry once other channels' images are in.
//!
//! [`GlzDictionary`] implements this rule with a map from id to image instead of spice-gtk's hash array
//! indexed by `id % capacity`. For ids that start at 0 and do not jump by more than the table capacity
//! (what the server sends: ids count from 0 per dictionary), both behave the same. spice-gtk's array can
//! confuse ids that are equal modulo its capacity (its `tail_gap` and release steps look at array slots
//! without checking the id there), and its release loop steps through every id one by one, so a huge id
//! can keep it busy for up to 2^64 steps; the map has neither problem (releasing is a range removal).
//!
//! The window size the client announces in `SPICE_MSGC_DISPLAY_INIT` (`glz_dictionary_window_size`, in
//! pixels) is not used by spice-gtk's decoder at all; the server sizes its dictionary with it and never
//! sends an image of that many pixels or more, nor references images outside it. Here it bounds memory:
//! see [`GlzDictionary::new`].

use std::collections::BTreeMap;

use super::stream::{AlphaUnit, Output, Reader, Rgb16Unit, RgbUnit, Unit};
use super::{LZ_MAGIC, LZ_VERSION, LzError, LzImage, LzPixels, LzType, checked_pixels, flip_rows};

/// The largest dictionary window the server accepts (`LZ_MAX_WINDOW_SIZE` in `lz_common.h`, 2^25
/// pixels); also the window assumed when 0 is given to [`GlzDictionary::new`].
pub const MAX_WINDOW_PIXELS: u32 = 1 << 25;
/// Most images a [`GlzDictionary`] retains at once.
pub const MAX_WINDOW_IMAGES: usize = 1 << 18;

/// Length of the GLZ header in bytes.
const HEADER_LEN: usize = 33;

/// Why a GLZ image could not be decoded. On any error the dictionary is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GlzError {
    /// A problem shared with LZ: magic, version, type code, dimensions, truncation, a same-image
    /// back-reference before the image start, or a run past the image end.
    #[error(transparent)]
    Format(#[from] LzError),
    /// A valid type that the GLZ decoder does not handle (palette, XXXA and A8 types).
    #[error("GLZ images of type {lz_type:?} are not supported")]
    UnsupportedType {
        /// The type from the header.
        lz_type: LzType,
    },
    /// `win_head_dist` is larger than the image id (the window would start before image 0).
    #[error("GLZ image {id} has window head distance {win_head_dist} beyond image 0")]
    BadWindowDistance {
        /// Image id.
        id: u64,
        /// The distance from the header.
        win_head_dist: u32,
    },
    /// The image has at least as many pixels as the whole window (the server never sends such images).
    #[error("GLZ image {id} of {pixels} pixels does not fit the {window} pixel window")]
    LargerThanWindow {
        /// Image id.
        id: u64,
        /// Pixels in the image.
        pixels: u64,
        /// The window size in pixels.
        window: u64,
    },
    /// A match refers to an image distance larger than the current image id.
    #[error("GLZ image {id}: reference to image distance {distance} before image 0")]
    BadImageDistance {
        /// Id of the image being decoded.
        id: u64,
        /// The image distance from the match.
        distance: u64,
    },
    /// A match refers to an image that is not in the window (never received, released or evicted).
    #[error("GLZ image {referenced_by} refers to image {id}, which is not in the window")]
    MissingImage {
        /// The id referred to.
        id: u64,
        /// Id of the image being decoded.
        referenced_by: u64,
    },
    /// A match reads beyond the end of the referenced image.
    #[error("GLZ reference to pixels {offset}..+{len} of image {id}, which has {available} pixels")]
    BadImageReference {
        /// The id referred to.
        id: u64,
        /// First pixel of the match in that image.
        offset: u64,
        /// Match length in pixels.
        len: u64,
        /// Pixels in that image.
        available: u64,
    },
}

/// The fields of a GLZ header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlzHeader {
    /// Image type.
    pub lz_type: LzType,
    /// Whether rows are stored top first.
    pub top_down: bool,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Stride of the source bitmap (informational; spice-gtk ignores it for RGB types, so do we).
    pub stride: u32,
    /// Session-wide image id.
    pub id: u64,
    /// Distance from this id back to the oldest image the server may still refer to.
    pub win_head_dist: u32,
}

impl GlzHeader {
    /// Parses and validates a GLZ header (magic, version, type code, dimensions, window distance); the
    /// type may still be one [`GlzDictionary::decode`] refuses as unsupported.
    pub fn parse(data: &[u8]) -> Result<Self, GlzError> {
        Self::read(&mut Reader::new(data))
    }

    fn read(input: &mut Reader<'_>) -> Result<Self, GlzError> {
        let magic = input.be_u32()?;
        if magic != LZ_MAGIC {
            return Err(LzError::BadMagic { found: magic }.into());
        }
        let version = input.be_u32()?;
        if version != LZ_VERSION {
            return Err(LzError::BadVersion { found: version }.into());
        }
        let type_byte = input.u8()?;
        let code = u32::from(type_byte & 0x0f);
        let lz_type = LzType::from_code(code).ok_or(LzError::BadType { found: code })?;
        let width = input.be_u32()?;
        let height = input.be_u32()?;
        let stride = input.be_u32()?;
        let id = input.be_u64()?;
        let win_head_dist = input.be_u32()?;
        debug_assert_eq!(input.position(), HEADER_LEN);
        checked_pixels(width, height)?;
        if u64::from(win_head_dist) > id {
            return Err(GlzError::BadWindowDistance { id, win_head_dist });
        }
        Ok(Self { lz_type, top_down: type_byte >> 4 != 0, width, height, stride, id, win_head_dist })
    }
}

/// A decoded image kept for later references.
struct WindowImage {
    win_head_dist: u32,
    /// ARGB words in stream order.
    pixels: Box<[u32]>,
}

/// The session-wide GLZ image window plus decoder (one per SPICE session, shared by its display
/// channels, like spice-gtk's `SpiceGlzDecoderWindow`).
///
/// # Memory bound
///
/// With `window` the effective window size (see [`GlzDictionary::new`]), images of `window` pixels or
/// more are refused, and after the release rule the retained images are limited to `2 * window` pixels
/// and [`MAX_WINDOW_IMAGES`] images. At 4 bytes per pixel that is at most 256 MiB for the largest window
/// (2^25 pixels) and 48 MiB for the 6 290 432-pixel window of our recordings (spice-gtk announces 3 to
/// 16 Mi pixels by default, depending on the guest's video memory), plus about 100 bytes per image. A correct server keeps the images it may still reference under `window` pixels, so the bound
/// only bites on hostile or broken streams or when many images from several display channels arrive out
/// of order. When it is hit, the lowest ids (never the image just decoded) are dropped beyond spice-gtk's
/// rule; a later reference to one of them fails with [`GlzError::MissingImage`] where spice-gtk would
/// still have it. [`GlzDictionary::evicted`] counts such drops.
pub struct GlzDictionary {
    window: u64,
    max_retained_pixels: u64,
    images: BTreeMap<u64, WindowImage>,
    retained_pixels: u64,
    tail_gap: u64,
    oldest: u64,
    evicted: u64,
}

impl GlzDictionary {
    /// A dictionary for a session whose client announced `window_size` pixels in
    /// `SPICE_MSGC_DISPLAY_INIT` (`glz_dictionary_window_size`; spice-gtk sends its `glz-window-size`
    /// property, in bytes, divided by 4). 0 means unknown and, like values above the server's maximum,
    /// is taken as [`MAX_WINDOW_PIXELS`].
    pub fn new(window_size: u32) -> Self {
        let window = if window_size == 0 { MAX_WINDOW_PIXELS } else { window_size.min(MAX_WINDOW_PIXELS) };
        Self {
            window: u64::from(window),
            max_retained_pixels: 2 * u64::from(window),
            images: BTreeMap::new(),
            retained_pixels: 0,
            tail_gap: 0,
            oldest: 0,
            evicted: 0,
        }
    }

    /// Decodes one GLZ image (the payload of a `GLZ_RGB` image, or the inflated payload of a
    /// `ZLIB_GLZ_RGB` one), inserts it into the window under its id and applies the release rule.
    ///
    /// Returns the image with top-down rows as [`LzPixels::Argb`] words; a copy in stream order stays in
    /// the window. Bytes after the end of the image are ignored, as spice-gtk does. On error nothing
    /// changes.
    pub fn decode(&mut self, data: &[u8]) -> Result<LzImage, GlzError> {
        let mut input = Reader::new(data);
        let header = GlzHeader::read(&mut input)?;
        let GlzHeader { lz_type, top_down, width, height, id, win_head_dist, .. } = header;
        let count = checked_pixels(width, height)?;
        if count as u64 >= self.window {
            return Err(GlzError::LargerThanWindow { id, pixels: count as u64, window: self.window });
        }
        if !matches!(lz_type, LzType::Rgb16 | LzType::Rgb24 | LzType::Rgb32 | LzType::Rgba) {
            return Err(GlzError::UnsupportedType { lz_type });
        }
        let mut pixels = vec![0u32; count];
        match lz_type {
            LzType::Rgb16 => self.run::<Rgb16Unit>(&mut input, &mut pixels, id)?,
            LzType::Rgba => {
                self.run::<RgbUnit>(&mut input, &mut pixels, id)?;
                self.run::<AlphaUnit>(&mut input, &mut pixels, id)?;
            }
            _ => self.run::<RgbUnit>(&mut input, &mut pixels, id)?,
        }

        let mut shown = pixels.clone();
        if !top_down {
            flip_rows(&mut shown, width as usize);
        }
        self.insert(id, WindowImage { win_head_dist, pixels: pixels.into_boxed_slice() });
        Ok(LzImage { lz_type, width, height, top_down, pixels: LzPixels::Argb(shown) })
    }

    /// Empties the window and restarts the counters, for a new connection (spice-gtk clears its window
    /// when a session connects). spice-gtk resets `tail_gap` but keeps its `oldest` counter, so after a
    /// reconnect whose ids restart at 0 it keeps images longer than the rule intends; a valid stream
    /// decodes the same either way, so this resets both.
    pub fn clear(&mut self) {
        self.images.clear();
        self.retained_pixels = 0;
        self.tail_gap = 0;
        self.oldest = 0;
    }

    /// The effective window size in pixels.
    pub fn window_size(&self) -> u64 {
        self.window
    }

    /// Number of images retained.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether no image is retained.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Whether the image `id` is retained.
    pub fn contains(&self, id: u64) -> bool {
        self.images.contains_key(&id)
    }

    /// Total pixels of the retained images.
    pub fn retained_pixels(&self) -> u64 {
        self.retained_pixels
    }

    /// How many images the memory bound dropped beyond spice-gtk's release rule.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn insert(&mut self, id: u64, image: WindowImage) {
        self.retained_pixels += image.pixels.len() as u64;
        if let Some(old) = self.images.insert(id, image) {
            self.retained_pixels -= old.pixels.len() as u64;
        }
        while self.tail_gap <= id && self.images.contains_key(&self.tail_gap) {
            self.tail_gap += 1;
        }
        let release_below = self
            .tail_gap
            .checked_sub(1)
            .and_then(|newest| self.images.get(&newest).map(|img| newest - u64::from(img.win_head_dist)));
        if let Some(release_below) = release_below.filter(|&below| below > self.oldest) {
            let doomed: Vec<u64> = self.images.range(self.oldest..release_below).map(|(&k, _)| k).collect();
            for key in doomed {
                self.remove(key);
            }
            self.oldest = release_below;
        }
        while self.images.len() > MAX_WINDOW_IMAGES || self.retained_pixels > self.max_retained_pixels {
            let Some(victim) = self.images.keys().copied().find(|&k| k != id) else { break };
            self.remove(victim);
            self.evicted += 1;
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(old) = self.images.remove(&id) {
            self.retained_pixels -= old.pixels.len() as u64;
        }
    }

    /// Runs one GLZ pass until `buf` is full.
    fn run<U: Unit<Px = u32>>(&self, input: &mut Reader<'_>, buf: &mut [u32], id: u64) -> Result<(), GlzError> {
        let mut out = Output::<U>::new(buf);
        loop {
            let ctrl = u32::from(input.u8()?);
            if ctrl < 32 {
                out.literals(input, ctrl as usize + 1)?;
            } else {
                let len = input.match_len(ctrl >> 5)?.saturating_add(U::LEN_BIAS);
                let wide_offset = ctrl & 0x10 != 0;
                let mut offset = u64::from(ctrl & 0x0f) | u64::from(input.u8()?) << 4;
                let code = input.u8()?;
                let extra_bytes = u32::from(code >> 6);
                let mut distance = 0u64;
                if wide_offset {
                    offset |= u64::from(code & 0x1f) << 12;
                    for i in 0..extra_bytes {
                        distance |= u64::from(input.u8()?) << (8 * i);
                    }
                    if code & 0x20 != 0 {
                        offset |= u64::from(input.u8()?) << 17;
                    }
                } else {
                    distance = u64::from(code & 0x3f);
                    for i in 0..extra_bytes {
                        distance |= u64::from(input.u8()?) << (6 + 8 * i);
                    }
                }
                if distance == 0 {
                    out.copy_back(offset as usize + 1, len)?;
                } else {
                    out.check_room(len)?;
                    let source = id.checked_sub(distance).ok_or(GlzError::BadImageDistance { id, distance })?;
                    let image =
                        self.images.get(&source).ok_or(GlzError::MissingImage { id: source, referenced_by: id })?;
                    let available = image.pixels.len() as u64;
                    let bad = GlzError::BadImageReference { id: source, offset, len: len as u64, available };
                    let end = offset.checked_add(len as u64).filter(|&end| end <= available).ok_or(bad)?;
                    out.copy_from(&image.pixels[offset as usize..end as usize])?;
                }
            }
            if out.is_full() {
                return Ok(());
            }
        }
    }
}

impl std::fmt::Debug for GlzDictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlzDictionary")
            .field("window", &self.window)
            .field("images", &self.images.len())
            .field("retained_pixels", &self.retained_pixels)
            .field("tail_gap", &self.tail_gap)
            .field("oldest", &self.oldest)
            .field("evicted", &self.evicted)
            .finish()
    }
}
