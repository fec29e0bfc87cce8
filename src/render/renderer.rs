//! The display model: surfaces, caches, and what each display message does
//! to them, as spice-gtk's display channel and software canvas do
//! (spice-gtk `channel-display.c`, spice-common `canvas_base.c`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use serde::Serialize;

use super::canvas::{Rop, RopSource, Surface};
use super::display::{self, Brush, DisplayMessage, msg};
use super::display::{DisplayBase, QMask, Rect};
use super::image::{self, Alpha, ImageCaches, ImageError, ImageSources, Pixels, checked_pixels};
use super::lz::{GlzDictionary, LzPixels};
use super::raster;
use super::stream::{Stream, codec_name};
use crate::limits::MAX_SURFACE_PIXELS;
use crate::wire::Reader;

/// Why a stroke or composite was not drawn.
enum StrokeOutcome {
    /// A case spicetap does not draw yet.
    Unsupported(String),
    /// A malformed message.
    Error(String),
}

/// A brush converted for painting.
enum BrushPaint {
    /// A solid colour, in the surface's format as sent.
    Solid(u32),
    /// A tiled pattern and its origin.
    Pattern(Pixels, (i32, i32)),
}

/// Reads an inline 1-bpp BITMAP mask image (`canvas_get_bitmap_mask`):
/// descriptor, then format u8 (1BIT_LE 1 / 1BIT_BE 2), flags u8 (TOP_DOWN
/// 4), x u32, y u32, stride u32, palette (u32 pointer, or u64 id when
/// PAL_FROM_CACHE), data.
fn mask_bits(body: &[u8], offset: u32) -> Option<raster::MaskBits> {
    let rest = body.get(usize::try_from(offset).ok()?..)?;
    let mut r = Reader::new(rest);
    r.u64().ok()?;
    if r.u8().ok()? != image::image_type::BITMAP {
        return None;
    }
    r.u8().ok()?;
    r.u32().ok()?;
    r.u32().ok()?;
    let format = r.u8().ok()?;
    let flags = r.u8().ok()?;
    let (w, h, stride) = (r.u32().ok()?, r.u32().ok()?, r.u32().ok()?);
    if flags & 2 != 0 {
        r.u64().ok()?;
    } else {
        r.u32().ok()?;
    }
    let len = usize::try_from(u64::from(stride) * u64::from(h)).ok()?;
    let data = r.take(len).ok()?;
    raster::MaskBits::from_bitmap(format, w, h, stride, flags & 4 != 0, data)
}

/// GLZ window in pixels until the client's `SPICE_MSGC_DISPLAY_INIT` says
/// otherwise: spice-gtk's smallest default window, 12 MiB of 32-bit pixels
/// (spice-gtk `spice-session.c` `MIN_GLZ_WINDOW_SIZE_DEFAULT`, sent as
/// bytes / 4 by `channel-display.c`).
const DEFAULT_GLZ_WINDOW: u32 = 12 * 1024 * 1024 / 4;
/// `SPICE_MSGC_DISPLAY_INIT`.
const MSGC_DISPLAY_INIT: u16 = 101;

/// `SPICE_SURFACE_FLAGS_PRIMARY`.
const SURFACE_PRIMARY: u32 = 1;
/// `SPICE_MSG_LIST` (spice-protocol `enums.h`).
const SPICE_MSG_LIST: u16 = 8;
/// Most sub-messages in one `SPICE_MSG_LIST`.
const MAX_SUB_MESSAGES: u16 = 4096;

/// What the renderer did and could not do, for `session.json` and `render`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RenderStats {
    /// Server messages handled.
    pub messages: u64,
    /// Drawing messages applied.
    pub draws: u64,
    /// `SPICE_MSG_DISPLAY_MARK`s seen.
    pub marks: u64,
    /// Messages or features not rendered, by name, with counts.
    pub unsupported: BTreeMap<String, u64>,
    /// Images met, by `SPICE_IMAGE_TYPE_*` name.
    pub images: BTreeMap<String, u64>,
    /// Stream frames drawn.
    pub stream_frames: u64,
    /// Streams created, by codec name.
    pub streams: BTreeMap<String, u64>,
    /// Messages whose decoding failed.
    pub errors: u64,
    /// The first errors, for diagnosis (at most 20).
    pub error_samples: Vec<String>,
}

/// What a message did to the display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderEvent {
    /// Nothing visible.
    None,
    /// Pixels of the primary surface may have changed.
    Drawn,
    /// The server marked the display complete (a frame boundary).
    Mark,
}

/// What a session's display channels share: the image and palette caches
/// and the GLZ dictionary (spice-gtk keeps one of each per session).
#[derive(Debug, Default)]
pub struct SharedImages {
    caches: ImageCaches,
    glz: Option<GlzDictionary>,
}

/// A handle to a session's [`SharedImages`], for the display renderers of
/// one render thread.
pub type Shared = Rc<RefCell<SharedImages>>;

/// The state of one display channel (its surfaces and streams), using the
/// session's shared images.
#[derive(Debug, Default)]
pub struct DisplayRenderer {
    surfaces: HashMap<u32, Surface>,
    primary: Option<u32>,
    shared: Shared,
    streams: HashMap<u32, Stream>,
    /// What happened so far.
    pub stats: RenderStats,
}

struct Sources<'a> {
    caches: &'a mut ImageCaches,
    surfaces: &'a HashMap<u32, Surface>,
    glz: &'a mut Option<GlzDictionary>,
}

impl ImageSources for Sources<'_> {
    fn caches(&mut self) -> &mut ImageCaches {
        self.caches
    }

    fn surface(&self, id: u32) -> Option<Pixels> {
        self.surfaces.get(&id).map(Surface::pixels)
    }

    fn glz(&mut self, data: &[u8]) -> Result<Pixels, ImageError> {
        let dict = self.glz.get_or_insert_with(|| GlzDictionary::new(DEFAULT_GLZ_WINDOW));
        let img = dict.decode(data).map_err(|e| ImageError::Codec { codec: "GLZ", error: e.to_string() })?;
        let alpha = if img.lz_type == super::lz::LzType::Rgba { Alpha::Premultiplied } else { Alpha::None };
        let data = match img.pixels {
            LzPixels::Argb(v) => v,
            _ => return Err(ImageError::Unsupported("GLZ of a non-RGB type".into())),
        };
        Ok(Pixels { width: img.width, height: img.height, data: std::sync::Arc::new(data), alpha })
    }
}

impl DisplayRenderer {
    /// An empty display with images of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty display sharing caches and GLZ dictionary with the other
    /// display channels of its session.
    pub fn with_shared(shared: Shared) -> Self {
        Self { shared, ..Self::default() }
    }

    /// The primary surface, once created.
    pub fn primary(&self) -> Option<&Surface> {
        self.primary.and_then(|id| self.surfaces.get(&id))
    }

    fn unsupported(&mut self, what: String) {
        *self.stats.unsupported.entry(what).or_insert(0) += 1;
    }

    fn error(&mut self, what: String) {
        self.stats.errors += 1;
        if self.stats.error_samples.len() < 20 {
            tracing::debug!(error = %what, "render error");
            self.stats.error_samples.push(what);
        }
    }

    /// Counts, as unsupported, a draw that spice-gtk cannot make on an
    /// alpha-only surface: its software canvas blits only 16 and 32 bits
    /// per pixel (spice-common `pixman_utils.c` `spice_pixman_blit` asserts
    /// so, and the failed assertion ends the client) and fills only 8, 16
    /// and 32 (`spice_pixman_fill_rect`). So a copy, ROP3, transparent or
    /// composite onto an 8_A surface, or any draw onto a 1_A surface, ends
    /// spice-gtk. spicetap still draws it, as pixman's arithmetic would,
    /// and the count says the picture has no spice-gtk reference.
    fn note_spice_gtk_abort(&mut self, msg_type: u16, body: &[u8]) {
        let blits = [
            msg::COPY_BITS,
            msg::DRAW_OPAQUE,
            msg::DRAW_COPY,
            msg::DRAW_BLEND,
            msg::DRAW_ROP3,
            msg::DRAW_TRANSPARENT,
            msg::DRAW_COMPOSITE,
        ];
        let fills = [
            msg::DRAW_FILL,
            msg::DRAW_BLACKNESS,
            msg::DRAW_WHITENESS,
            msg::DRAW_INVERS,
            msg::DRAW_STROKE,
            msg::DRAW_TEXT,
            msg::DRAW_ALPHA_BLEND,
        ];
        if !blits.contains(&msg_type) && !fills.contains(&msg_type) {
            return;
        }
        // Every draw starts with SpiceMsgDisplayBase, surface_id u32 first.
        let Some(id) = body.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) else { return };
        let Some(format) = self.surfaces.get(&id).map(|s| s.format) else { return };
        let fmt = match format {
            super::canvas::FMT_8_A if blits.contains(&msg_type) => "8_A",
            super::canvas::FMT_1_A => "1_A",
            _ => return,
        };
        let name = crate::protocol::message_name(
            crate::protocol::ChannelType::DISPLAY,
            crate::protocol::Direction::ServerToClient,
            msg_type,
        );
        self.unsupported(format!("{name} onto a {fmt} surface (spice-gtk aborts; drawn as pixman would)"));
    }

    /// Counts, as unsupported, an unscaled blit from a surface of another
    /// depth (say a 16-bit surface onto a 32-bit one): spice-gtk blits
    /// surfaces bit for bit and asserts equal depths (spice-common
    /// `pixman_utils.c` `spice_pixman_blit`, `_rop`, `_colorkey`), so the
    /// failed assertion ends it. spicetap draws the converted pixels.
    fn note_depth_mismatch(&mut self, msg_type: u16, body: &[u8], image: u32, dest_id: u32, region: &[Rect]) {
        let Some(src_id) = image::surface_source(body, image) else { return };
        let (Some(src), Some(dest)) = (self.surfaces.get(&src_id), self.surfaces.get(&dest_id)) else { return };
        let (src_bpp, dest_bpp) = (src.bits_per_pixel(), dest.bits_per_pixel());
        if src_bpp == dest_bpp || region.is_empty() {
            return;
        }
        let name = crate::protocol::message_name(
            crate::protocol::ChannelType::DISPLAY,
            crate::protocol::Direction::ServerToClient,
            msg_type,
        );
        self.unsupported(format!(
            "{name} from a {src_bpp}-bit surface onto a {dest_bpp}-bit one (spice-gtk aborts; drawn converted)"
        ));
    }

    /// Takes note of a client message: `SPICE_MSGC_DISPLAY_INIT`
    /// (pixmap_cache_id u8, pixmap_cache_size i64, glz_dictionary_id u8,
    /// glz_dictionary_window_size i32) sets the GLZ window.
    pub fn client_message(&mut self, msg_type: u16, body: &[u8]) {
        if msg_type != MSGC_DISPLAY_INIT {
            return;
        }
        let mut r = Reader::new(body);
        let window = (|| -> Option<u32> {
            r.u8().ok()?;
            r.u64().ok()?;
            r.u8().ok()?;
            u32::try_from(r.i32().ok()?).ok()
        })();
        if let Some(w) = window.filter(|&w| w > 0) {
            self.shared.borrow_mut().glz = Some(GlzDictionary::new(w));
        }
    }

    /// Applies one server message (a `SPICE_MSG_LIST` is expanded).
    pub fn server_message(&mut self, msg_type: u16, body: &[u8]) -> RenderEvent {
        if msg_type == SPICE_MSG_LIST {
            return self.message_list(body);
        }
        self.stats.messages += 1;
        self.note_spice_gtk_abort(msg_type, body);
        if msg_type == msg::DRAW_STROKE {
            return match self.draw_stroke(body) {
                Ok(ev) => ev,
                Err(StrokeOutcome::Unsupported(what)) => {
                    self.unsupported(format!("DRAW_STROKE: {what}"));
                    RenderEvent::None
                }
                Err(StrokeOutcome::Error(e)) => {
                    self.error(format!("SPICE_MSG_DISPLAY_DRAW_STROKE: {e}"));
                    RenderEvent::None
                }
            };
        }
        if msg_type == msg::DRAW_COMPOSITE {
            return match self.draw_composite(body) {
                Ok(ev) => ev,
                Err(StrokeOutcome::Unsupported(what)) => {
                    self.unsupported(format!("DRAW_COMPOSITE: {what}"));
                    RenderEvent::None
                }
                Err(StrokeOutcome::Error(e)) => {
                    self.error(format!("SPICE_MSG_DISPLAY_DRAW_COMPOSITE: {e}"));
                    RenderEvent::None
                }
            };
        }
        if msg_type == msg::DRAW_TEXT {
            return match self.draw_text(body) {
                Ok(ev) => ev,
                Err(e) => {
                    self.error(format!("SPICE_MSG_DISPLAY_DRAW_TEXT: {e}"));
                    RenderEvent::None
                }
            };
        }
        let parsed = match display::parse(msg_type, body) {
            Ok(m) => m,
            Err(e) => {
                self.error(format!(
                    "{}: {e}",
                    crate::protocol::message_name(
                        crate::protocol::ChannelType::DISPLAY,
                        crate::protocol::Direction::ServerToClient,
                        msg_type
                    )
                ));
                return RenderEvent::None;
            }
        };
        match self.apply(parsed, body) {
            Ok(ev) => ev,
            Err(e) => {
                self.error(e.to_string());
                RenderEvent::None
            }
        }
    }

    /// Expands a `SPICE_MSG_LIST`: count u16, offsets u32[count] of
    /// sub-messages (type u16, size u32, body) within the body.
    fn message_list(&mut self, body: &[u8]) -> RenderEvent {
        let mut r = Reader::new(body);
        let Ok(count) = r.u16() else {
            self.error("SPICE_MSG_LIST: short".into());
            return RenderEvent::None;
        };
        let mut event = RenderEvent::None;
        for _ in 0..count.min(MAX_SUB_MESSAGES) {
            let Ok(offset) = r.u32() else {
                self.error("SPICE_MSG_LIST: short".into());
                break;
            };
            let sub = usize::try_from(offset).ok().and_then(|o| body.get(o..)).and_then(|rest| {
                let mut s = Reader::new(rest);
                let ty = s.u16().ok()?;
                let size = s.u32().ok()?;
                let data = s.take(usize::try_from(size).ok()?).ok()?;
                Some((ty, data))
            });
            match sub {
                Some((ty, data)) if ty != SPICE_MSG_LIST => {
                    let e = self.server_message(ty, data);
                    if e != RenderEvent::None {
                        event = e;
                    }
                }
                _ => self.error(format!("SPICE_MSG_LIST: bad sub-message at {offset}")),
            }
        }
        event
    }

    fn apply(&mut self, m: DisplayMessage, body: &[u8]) -> Result<RenderEvent, ImageError> {
        match m {
            DisplayMessage::SurfaceCreate { surface_id, width, height, format, flags } => {
                let n = checked_pixels(width, height)? as u64;
                let others: u64 = self
                    .surfaces
                    .iter()
                    .filter(|(id, _)| **id != surface_id)
                    .map(|(_, s)| u64::from(s.width) * u64::from(s.height))
                    .sum();
                if others + n > crate::limits::MAX_DISPLAY_PIXELS {
                    return Err(ImageError::BadSize { width, height });
                }
                let primary = flags & SURFACE_PRIMARY != 0;
                // spice-gtk keeps the old primary (and its pixels) when a new
                // primary has the same size (channel-display.c).
                let keep = primary
                    && self.primary().is_some_and(|s| s.width == width && s.height == height && s.format == format);
                if !keep {
                    if primary && let Some(old) = self.primary.take() {
                        self.surfaces.remove(&old);
                    }
                    self.surfaces.insert(surface_id, Surface::new(width, height, format));
                } else if let Some(old) = self.primary
                    && old != surface_id
                    && let Some(s) = self.surfaces.remove(&old)
                {
                    self.surfaces.insert(surface_id, s);
                }
                if primary {
                    self.primary = Some(surface_id);
                }
                Ok(RenderEvent::Drawn)
            }
            DisplayMessage::SurfaceDestroy { surface_id } => {
                if self.primary != Some(surface_id) {
                    self.surfaces.remove(&surface_id);
                }
                Ok(RenderEvent::None)
            }
            DisplayMessage::Copy { msg_type, base, copy } => {
                // Decoded even when clipped out: it may feed the cache or GLZ.
                let pixels = self.image(body, copy.src_bitmap)?;
                let brush = if msg_type == msg::DRAW_OPAQUE { self.brush(body, copy.brush)? } else { None };
                let region = self.draw_region(body, &base, &copy.mask)?;
                let unscaled =
                    copy.src_area.width() == base.bbox.width() && copy.src_area.height() == base.bbox.height();
                if unscaled {
                    self.note_depth_mismatch(msg_type, body, copy.src_bitmap, base.surface_id, &region);
                }
                let Some(surface) = self.surfaces.get_mut(&base.surface_id) else {
                    return Err(ImageError::MissingSurface(base.surface_id));
                };
                // spice-common draws DRAW_BLEND exactly as DRAW_COPY
                // (canvas_base.c: "copy and blend are the same"). DRAW_OPAQUE
                // copies the image, then paints its brush over it with the
                // ROP (brush as source, image as destination).
                let rop = if msg_type == msg::DRAW_OPAQUE {
                    Rop::PUT
                } else {
                    Rop::from_descriptor(copy.rop_descriptor, RopSource::Image)
                };
                let from_surface = image::descriptor_type(body, copy.src_bitmap) == Some(image::image_type::SURFACE);
                if unscaled {
                    let dx = i64::from(copy.src_area.left) - i64::from(base.bbox.left);
                    let dy = i64::from(copy.src_area.top) - i64::from(base.bbox.top);
                    // An unscaled blit copies bits; only an alpha-only
                    // surface needs the image's alpha as pixman reads it.
                    let pixels = if !from_surface && surface.is_alpha_only() {
                        surface.in_canvas_format(pixels)
                    } else {
                        pixels
                    };
                    surface.blit(&region, &pixels, dx, dy, rop);
                } else {
                    // Bilinear scaling interpolates what spice-gtk fetched:
                    // on 16-bit surfaces, the image already truncated.
                    let pixels = if from_surface { pixels } else { surface.in_canvas_format(pixels) };
                    raster::scale_blit(surface, &region, &pixels, copy.src_area, base.bbox, copy.scale_mode, rop);
                    surface.settle(&region);
                }
                if msg_type == msg::DRAW_OPAQUE {
                    let brush_rop = Rop::from_inputs(
                        copy.rop_descriptor,
                        super::canvas::ropd::INVERS_BRUSH,
                        super::canvas::ropd::INVERS_SRC,
                    );
                    match brush {
                        Some(BrushPaint::Solid(c)) => surface.fill(&region, surface.brush_color(c), brush_rop),
                        Some(BrushPaint::Pattern(p, pos)) => surface.fill_pattern(&region, &p, pos, brush_rop),
                        None => {}
                    }
                }
                self.stats.draws += 1;
                Ok(self.drawn_on(base.surface_id))
            }
            DisplayMessage::Rop3 { base, src_bitmap, src_area, brush, rop3, scale_mode, mask } => {
                let pixels = if src_bitmap != 0 { Some(self.image(body, src_bitmap)?) } else { None };
                let brush = self.brush(body, brush)?;
                let region = self.draw_region(body, &base, &mask)?;
                let scaled = pixels.is_some()
                    && (src_area.width() != base.bbox.width() || src_area.height() != base.bbox.height());
                if !raster::rop3_is_implemented(rop3) {
                    // spice-gtk's rop3.c has no handler for this code: nothing changes.
                    self.unsupported(format!("ROP3 code {rop3:#04x} (no-op in spice-gtk)"));
                }
                // A scaled source is made whole at the box's size
                // (canvas_scale_surface): bounded like a surface. spice-gtk
                // draws boxes up to pixman's 2^31-byte image limit.
                if scaled && u64::from(base.bbox.width()) * u64::from(base.bbox.height()) > MAX_SURFACE_PIXELS {
                    self.unsupported(format!("scaled DRAW_ROP3 box over {MAX_SURFACE_PIXELS} pixels (not drawn)"));
                    return Ok(RenderEvent::None);
                }
                let Some(surface) = self.surfaces.get_mut(&base.surface_id) else {
                    return Err(ImageError::MissingSurface(base.surface_id));
                };
                let (pixels, dx, dy) = match pixels {
                    // A scaled source is first scaled to the box
                    // (canvas_scale_surface), then read from its corner.
                    Some(p) if scaled => {
                        let from_surface = image::descriptor_type(body, src_bitmap) == Some(image::image_type::SURFACE);
                        let p = if from_surface { p } else { surface.in_canvas_format(p) };
                        let (w, h) = (base.bbox.width(), base.bbox.height());
                        let Some(p) = raster::scale_surface(&p, src_area, w, h, scale_mode) else {
                            return Ok(RenderEvent::None);
                        };
                        (Some(p), -i64::from(base.bbox.left), -i64::from(base.bbox.top))
                    }
                    p => (
                        p,
                        i64::from(src_area.left) - i64::from(base.bbox.left),
                        i64::from(src_area.top) - i64::from(base.bbox.top),
                    ),
                };
                let src = pixels.as_ref().map(|p| (p, dx, dy));
                let brush3 = match &brush {
                    Some(BrushPaint::Solid(c)) => raster::Brush3::Solid(surface.brush_color(*c)),
                    Some(BrushPaint::Pattern(p, pos)) => raster::Brush3::Pattern { pixels: p, pos: *pos },
                    None => raster::Brush3::Solid(0),
                };
                raster::rop3(surface, &region, src, brush3, rop3);
                surface.settle(&region);
                self.stats.draws += 1;
                Ok(self.drawn_on(base.surface_id))
            }
            DisplayMessage::AlphaBlend { base, alpha_flags, alpha, src_bitmap, src_area } => {
                let pixels = self.image(body, src_bitmap)?;
                let Some(surface) = self.surfaces.get_mut(&base.surface_id) else {
                    return Err(ImageError::MissingSurface(base.surface_id));
                };
                let region = surface.region(&base.bbox, &base.clip);
                let (dest_has_alpha, src_has_alpha) = (alpha_flags & 1 != 0, alpha_flags & 2 != 0);
                raster::alpha_blend(
                    surface,
                    &region,
                    &pixels,
                    src_area,
                    base.bbox,
                    alpha,
                    src_has_alpha,
                    dest_has_alpha,
                );
                surface.settle(&region);
                self.stats.draws += 1;
                Ok(self.drawn_on(base.surface_id))
            }
            DisplayMessage::Transparent { base, src_bitmap, src_area, true_color } => {
                if let Some(t) = image::descriptor_type(body, src_bitmap) {
                    *self.stats.images.entry(image::type_name(t).into_owned()).or_insert(0) += 1;
                }
                let pixels = {
                    let mut shared = self.shared.borrow_mut();
                    let shared = &mut *shared;
                    let mut src =
                        Sources { caches: &mut shared.caches, surfaces: &self.surfaces, glz: &mut shared.glz };
                    image::decode(body, src_bitmap, &mut src)?
                };
                let unscaled = src_area.width() == base.bbox.width() && src_area.height() == base.bbox.height();
                let Some(surface) = self.surfaces.get_mut(&base.surface_id) else {
                    return Err(ImageError::MissingSurface(base.surface_id));
                };
                let region = surface.region(&base.bbox, &base.clip);
                if unscaled {
                    self.note_depth_mismatch(msg::DRAW_TRANSPARENT, body, src_bitmap, base.surface_id, &region);
                }
                let Some(surface) = self.surfaces.get_mut(&base.surface_id) else {
                    return Err(ImageError::MissingSurface(base.surface_id));
                };
                if !unscaled {
                    raster::scale_colorkey_blit(surface, &region, &pixels, src_area, base.bbox, true_color);
                } else {
                    let dx = i64::from(src_area.left) - i64::from(base.bbox.left);
                    let dy = i64::from(src_area.top) - i64::from(base.bbox.top);
                    surface.blit_colorkey(&region, &pixels, dx, dy, true_color);
                }
                self.stats.draws += 1;
                Ok(self.drawn_on(base.surface_id))
            }
            DisplayMessage::Fill { base, brush, rop_descriptor, mask } => {
                let masked = self.draw_region(body, &base, &mask)?;
                let rop = Rop::from_descriptor(rop_descriptor, RopSource::Brush);
                let pattern = match brush {
                    Brush::Pattern { image, pos } => {
                        let mut shared = self.shared.borrow_mut();
                        let shared = &mut *shared;
                        let mut src =
                            Sources { caches: &mut shared.caches, surfaces: &self.surfaces, glz: &mut shared.glz };
                        Some((image::decode(body, image, &mut src)?, pos))
                    }
                    _ => None,
                };
                let Some(surface) = self.surfaces.get_mut(&base.surface_id) else {
                    return Err(ImageError::MissingSurface(base.surface_id));
                };
                let region = masked;
                match (brush, pattern) {
                    (Brush::Solid(color), _) => surface.fill(&region, surface.brush_color(color), rop),
                    (_, Some((p, pos))) => surface.fill_pattern(&region, &p, (pos.x, pos.y), rop),
                    _ => surface.fill(&region, 0, rop),
                }
                self.stats.draws += 1;
                Ok(self.drawn_on(base.surface_id))
            }
            DisplayMessage::Solid { msg_type, base, mask } => {
                let region = self.draw_region(body, &base, &mask)?;
                let Some(surface) = self.surfaces.get_mut(&base.surface_id) else {
                    return Err(ImageError::MissingSurface(base.surface_id));
                };
                let op = match msg_type {
                    msg::DRAW_BLACKNESS => super::canvas::ropd::OP_BLACKNESS,
                    msg::DRAW_WHITENESS => super::canvas::ropd::OP_WHITENESS,
                    _ => super::canvas::ropd::OP_INVERS,
                };
                surface.fill(&region, 0, Rop::from_descriptor(op, RopSource::Brush));
                self.stats.draws += 1;
                Ok(self.drawn_on(base.surface_id))
            }
            DisplayMessage::CopyBits { base, src_pos } => {
                let Some(surface) = self.surfaces.get_mut(&base.surface_id) else {
                    return Err(ImageError::MissingSurface(base.surface_id));
                };
                let region = surface.region(&base.bbox, &base.clip);
                let dx = i64::from(src_pos.x) - i64::from(base.bbox.left);
                let dy = i64::from(src_pos.y) - i64::from(base.bbox.top);
                surface.copy_bits(&region, dx, dy);
                self.stats.draws += 1;
                Ok(self.drawn_on(base.surface_id))
            }
            DisplayMessage::InvalList(ids) => {
                for id in ids {
                    self.shared.borrow_mut().caches.remove(id);
                }
                Ok(RenderEvent::None)
            }
            DisplayMessage::InvalAllPixmaps => {
                self.shared.borrow_mut().caches.clear_images();
                Ok(RenderEvent::None)
            }
            DisplayMessage::InvalPalette(id) => {
                self.shared.borrow_mut().caches.remove_palette(id);
                Ok(RenderEvent::None)
            }
            DisplayMessage::InvalAllPalettes => {
                self.shared.borrow_mut().caches.clear_palettes();
                Ok(RenderEvent::None)
            }
            DisplayMessage::StreamCreate { surface_id, id, flags, codec, src_width, src_height, dest, clip } => {
                *self.stats.streams.entry(codec_name(codec)).or_insert(0) += 1;
                if !super::stream::decodable(codec) {
                    self.unsupported(format!("{} stream", codec_name(codec)));
                }
                self.streams.insert(id, Stream::new(surface_id, flags, codec, (src_width, src_height), dest, clip));
                Ok(RenderEvent::None)
            }
            DisplayMessage::StreamData { id, sized, data_at, data_len, .. } => {
                let Some(stream) = self.streams.get_mut(&id) else {
                    return Err(ImageError::Unsupported(format!("data for unknown stream {id}")));
                };
                if !super::stream::decodable(stream.codec) {
                    return Ok(RenderEvent::None);
                }
                let (size, dest) = match sized {
                    Some((w, h, dest)) => {
                        stream.dest = dest;
                        ((w, h), dest)
                    }
                    None => ((stream.src_width, stream.src_height), stream.dest),
                };
                let data = &body[data_at..data_at + data_len];
                let Some(frame) = stream.decode(data, size, &dest)? else { return Ok(RenderEvent::None) };
                let (surface_id, clip) = (stream.surface_id, stream.clip.clone());
                let Some(surface) = self.surfaces.get_mut(&surface_id) else {
                    return Err(ImageError::MissingSurface(surface_id));
                };
                let region = surface.region(&dest, &clip);
                surface.blit(&region, &frame, -i64::from(dest.left), -i64::from(dest.top), Rop::PUT);
                self.stats.stream_frames += 1;
                Ok(self.drawn_on(surface_id))
            }
            DisplayMessage::StreamClip { id, clip } => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.clip = clip;
                }
                Ok(RenderEvent::None)
            }
            DisplayMessage::StreamDestroy { id } => {
                self.streams.remove(&id);
                Ok(RenderEvent::None)
            }
            DisplayMessage::StreamDestroyAll => {
                self.streams.clear();
                Ok(RenderEvent::None)
            }
            DisplayMessage::Mark => {
                self.stats.marks += 1;
                Ok(RenderEvent::Mark)
            }
            DisplayMessage::Reset => Ok(RenderEvent::None),
            DisplayMessage::Other(t) => {
                // Messages with no pixels to draw (mode, monitors config, stream
                // reports...) are fine; drawing ones not rendered yet are counted.
                if matches!(t, msg::GL_SCANOUT_UNIX | msg::GL_DRAW) {
                    let name = crate::protocol::message_name(
                        crate::protocol::ChannelType::DISPLAY,
                        crate::protocol::Direction::ServerToClient,
                        t,
                    );
                    self.unsupported(name.into_owned());
                }
                Ok(RenderEvent::None)
            }
        }
    }

    /// `SPICE_MSG_DISPLAY_DRAW_STROKE` (spice-common `canvas_draw_stroke`,
    /// see [`super::stroke`]): thin lines, solid or dashed.
    fn draw_stroke(&mut self, body: &[u8]) -> Result<RenderEvent, StrokeOutcome> {
        use super::stroke::{StrokeBrush, StrokeError, draw_stroke, parse_stroke};
        let stroke = parse_stroke(body).map_err(|e| StrokeOutcome::Error(e.to_string()))?;
        let pattern = match stroke.brush {
            Brush::Pattern { image, pos } => {
                let pixels = self.image(body, image).map_err(|e| StrokeOutcome::Error(e.to_string()))?;
                if image::descriptor_type(body, image) == Some(image::image_type::SURFACE) {
                    // stroke_fill_spans paints gc.tile, which canvas_draw_stroke
                    // leaves NULL when the pattern is a surface.
                    self.unsupported(
                        "DRAW_STROKE: pattern from a surface (spice-gtk paints a null tile; drawn from the surface)"
                            .into(),
                    );
                    Some((pixels.as_pixman_reads(), pos, true))
                } else {
                    Some((pixels, pos, false))
                }
            }
            _ => None,
        };
        let Some(surface) = self.surfaces.get_mut(&stroke.surface_id) else {
            return Err(StrokeOutcome::Error(ImageError::MissingSurface(stroke.surface_id).to_string()));
        };
        // canvas_get_image(want_original = FALSE): the canvas format.
        let pattern = pattern
            .map(|(p, pos, from_surface)| (if from_surface { p } else { surface.in_canvas_format(p) }, (pos.x, pos.y)));
        let brush = match (&stroke.brush, &pattern) {
            (Brush::Solid(c), _) => StrokeBrush::Solid(surface.brush_color(*c)),
            (_, Some((p, pos))) => StrokeBrush::Tile(p, *pos),
            _ => StrokeBrush::Solid(0),
        };
        let region = surface.region(&stroke.bbox, &stroke.clip);
        match draw_stroke(surface, &region, &stroke, brush) {
            Ok(()) => {}
            Err(StrokeError::Unsupported(what)) => return Err(StrokeOutcome::Unsupported(what.to_string())),
            Err(e) => return Err(StrokeOutcome::Error(e.to_string())),
        }
        self.stats.draws += 1;
        Ok(self.drawn_on(stroke.surface_id))
    }

    /// `SPICE_MSG_DISPLAY_DRAW_COMPOSITE` (spice-common
    /// `canvas_draw_composite`, see [`super::composite`]).
    fn draw_composite(&mut self, body: &[u8]) -> Result<RenderEvent, StrokeOutcome> {
        use super::combine_float::ChannelBits;
        use super::composite::{
            CompositeError, CompositeImage, draw_composite, flags as composite_flags, parse_composite,
        };
        let c = parse_composite(body).map_err(|e| StrokeOutcome::Error(e.to_string()))?;
        let err = |e: ImageError| StrokeOutcome::Error(e.to_string());
        let src = self.image(body, c.src_bitmap).map_err(err)?;
        let mask = match c.mask_bitmap {
            Some(m) => Some(self.image(body, m).map_err(err)?),
            None => None,
        };
        let format_of =
            |offset: u32| image::surface_source(body, offset).and_then(|id| self.surfaces.get(&id)).map(|s| s.format);
        let src_format = format_of(c.src_bitmap);
        let mask_format = c.mask_bitmap.and_then(format_of);
        let Some(surface) = self.surfaces.get_mut(&c.base.surface_id) else {
            return Err(StrokeOutcome::Error(ImageError::MissingSurface(c.base.surface_id).to_string()));
        };
        // Each image in the pixman format spice-gtk reads it in. A surface
        // in its own; SOURCE_OPAQUE drops a surface source's alpha
        // (sw_canvas.c get_image(force_opaque)) and nothing else's. Other
        // images come in the canvas format (canvas_get_image with
        // want_original false): on 16-bit surfaces opaque and truncated.
        let canvas_format = |surface: &Surface, p: Pixels| {
            let p = surface.in_canvas_format(p);
            let bits = if surface.is_16bit() || surface.is_alpha_only() {
                ChannelBits::of_surface_format(surface.format)
            } else {
                CompositeImage::from(&p).bits
            };
            (p, bits)
        };
        let (src, src_bits) = match src_format {
            Some(f) if c.has(composite_flags::SOURCE_OPAQUE) => {
                let mut bits = ChannelBits::of_surface_format(f);
                bits.0[0] = 0;
                (src.opaque(), bits)
            }
            Some(f) => (src.as_pixman_reads(), ChannelBits::of_surface_format(f)),
            None => canvas_format(surface, src),
        };
        let mask = match (mask, mask_format) {
            (Some(m), Some(f)) => Some((m.as_pixman_reads(), ChannelBits::of_surface_format(f))),
            (Some(m), None) => Some(canvas_format(surface, m)),
            (None, _) => None,
        };
        let region = surface.region(&c.base.bbox, &c.base.clip);
        let src = CompositeImage { pixels: &src, bits: src_bits };
        let mask = mask.as_ref().map(|(pixels, bits)| CompositeImage { pixels, bits: *bits });
        match draw_composite(surface, &region, &c, src, mask) {
            Ok(()) => {}
            Err(CompositeError::Unsupported(what)) => return Err(StrokeOutcome::Unsupported(what.to_string())),
            Err(e) => return Err(StrokeOutcome::Error(e.to_string())),
        }
        self.stats.draws += 1;
        Ok(self.drawn_on(c.base.surface_id))
    }

    /// `SPICE_MSG_DISPLAY_DRAW_TEXT` (spice-common `canvas_draw_text`, see
    /// [`super::text`]).
    fn draw_text(&mut self, body: &[u8]) -> Result<RenderEvent, String> {
        let text = super::text::parse_text(body).map_err(|e| e.to_string())?;
        let fore = self.brush(body, text.fore_brush).map_err(|e| e.to_string())?;
        let back = self.brush(body, text.back_brush).map_err(|e| e.to_string())?;
        fn paint(b: &Option<BrushPaint>) -> super::text::Paint<'_> {
            match b {
                None => super::text::Paint::None,
                Some(BrushPaint::Solid(c)) => super::text::Paint::Solid(*c),
                Some(BrushPaint::Pattern(p, pos)) => {
                    super::text::Paint::Pattern(p, super::display::Point { x: pos.0, y: pos.1 })
                }
            }
        }
        let surface_id = text.base.surface_id;
        let Some(surface) = self.surfaces.get_mut(&surface_id) else {
            return Err(ImageError::MissingSurface(surface_id).to_string());
        };
        let region = surface.region(&text.base.bbox, &text.base.clip);
        super::text::draw_text(surface, &region, &text, paint(&fore), paint(&back));
        self.stats.draws += 1;
        Ok(self.drawn_on(surface_id))
    }

    /// Decodes the image at `offset`, counting its type.
    fn image(&mut self, body: &[u8], offset: u32) -> Result<Pixels, ImageError> {
        if let Some(t) = image::descriptor_type(body, offset) {
            *self.stats.images.entry(image::type_name(t).into_owned()).or_insert(0) += 1;
        }
        let mut shared = self.shared.borrow_mut();
        let shared = &mut *shared;
        let mut src = Sources { caches: &mut shared.caches, surfaces: &self.surfaces, glz: &mut shared.glz };
        image::decode(body, offset, &mut src)
    }

    /// A brush ready to paint on the target surface's pixels.
    fn brush(&mut self, body: &[u8], brush: Brush) -> Result<Option<BrushPaint>, ImageError> {
        Ok(match brush {
            Brush::None => None,
            Brush::Solid(c) => Some(BrushPaint::Solid(c)),
            Brush::Pattern { image, pos } => Some(BrushPaint::Pattern(self.image(body, image)?, (pos.x, pos.y))),
        })
    }

    /// The pixels a drawing may touch: box ∩ clip ∩ surface, then its 1-bpp
    /// mask when it has one (spice-common `canvas_base.c`
    /// `canvas_mask_pixman`: mask pixel `pos` lies at the box's top-left).
    fn draw_region(&mut self, body: &[u8], base: &DisplayBase, mask: &QMask) -> Result<Vec<Rect>, ImageError> {
        let Some(surface) = self.surfaces.get(&base.surface_id) else {
            return Err(ImageError::MissingSurface(base.surface_id));
        };
        let region = surface.region(&base.bbox, &base.clip);
        if mask.bitmap == 0 {
            return Ok(region);
        }
        let Some(bits) = mask_bits(body, mask.bitmap) else {
            self.unsupported("mask that is not an inline 1-bit bitmap".into());
            return Ok(region);
        };
        let offset =
            (i64::from(mask.pos.x) - i64::from(base.bbox.left), i64::from(mask.pos.y) - i64::from(base.bbox.top));
        Ok(raster::mask_region(&region, &bits, offset, mask.invers))
    }

    fn drawn_on(&self, surface_id: u32) -> RenderEvent {
        if Some(surface_id) == self.primary { RenderEvent::Drawn } else { RenderEvent::None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn surface_create(w: u32, h: u32) -> Vec<u8> {
        [0u32, w, h, 32, 1].iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// DisplayBase (surface 0, box 0,0-w,h, no clip) + source image pointer
    /// and area, then `tail`, then a 32-bit top-down bitmap image.
    fn draw_with_bitmap(w: u32, h: u32, tail: &[u8], pixels: &[u32]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_le_bytes());
        for v in [0i32, 0, h as i32, w as i32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(0);
        let ptr_at = b.len();
        b.extend_from_slice(&0u32.to_le_bytes());
        for v in [0i32, 0, h as i32, w as i32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(tail);
        let image_at = b.len() as u32;
        b[ptr_at..ptr_at + 4].copy_from_slice(&image_at.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&[0, 0]); // BITMAP, no flags
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&[8, 4]); // 32BIT, TOP_DOWN
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&(w * 4).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for p in pixels {
            b.extend_from_slice(&p.to_le_bytes());
        }
        b
    }

    #[test]
    fn blend_draws_as_copy_and_transparent_skips_its_colour() {
        let mut r = DisplayRenderer::new();
        assert_eq!(r.server_message(msg::SURFACE_CREATE, &surface_create(2, 1)), RenderEvent::Drawn);
        // DRAW_BLEND with OP_PUT: rop u16, scale u8, mask (flags u8, pos, bitmap u32).
        let mut tail = (super::super::canvas::ropd::OP_PUT).to_le_bytes().to_vec();
        tail.push(1);
        tail.extend_from_slice(&[0; 13]);
        let blend = draw_with_bitmap(2, 1, &tail, &[0x112233, 0x445566]);
        assert_eq!(r.server_message(msg::DRAW_BLEND, &blend), RenderEvent::Drawn);
        assert_eq!(r.primary().unwrap().data, [0x112233, 0x445566]);
        // DRAW_TRANSPARENT: src_color u32, true_color u32.
        let mut tail = 0u32.to_le_bytes().to_vec();
        tail.extend_from_slice(&0x00ff_00ffu32.to_le_bytes());
        let transparent = draw_with_bitmap(2, 1, &tail, &[0x00ff_00ff, 0x0000_0001]);
        assert_eq!(r.server_message(msg::DRAW_TRANSPARENT, &transparent), RenderEvent::Drawn);
        assert_eq!(r.primary().unwrap().data, [0x112233, 0x0000_0001]);
        assert!(r.stats.unsupported.is_empty(), "{:?}", r.stats.unsupported);
        assert_eq!(r.stats.errors, 0, "{:?}", r.stats.error_samples);
    }

    #[test]
    fn draws_spice_gtk_cannot_make_on_alpha_surfaces_are_counted() {
        use super::super::canvas::ropd;
        let mut r = DisplayRenderer::new();
        // Surface 0 as an 8_A primary: a fill is fine, a copy is counted.
        let create: Vec<u8> = [0u32, 2, 1, 8, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        r.server_message(msg::SURFACE_CREATE, &create);
        let mut fill = 0u32.to_le_bytes().to_vec();
        for v in [0i32, 0, 1, 2] {
            fill.extend_from_slice(&v.to_le_bytes());
        }
        fill.push(0);
        fill.push(1);
        fill.extend_from_slice(&0x1234_5680u32.to_le_bytes());
        fill.extend_from_slice(&ropd::OP_PUT.to_le_bytes());
        fill.extend_from_slice(&[0; 13]);
        assert_eq!(r.server_message(msg::DRAW_FILL, &fill), RenderEvent::Drawn);
        assert_eq!(r.primary().unwrap().data, [0x8000_0000; 2], "alpha from the colour's low byte");
        assert!(r.stats.unsupported.is_empty(), "{:?}", r.stats.unsupported);
        let mut tail = ropd::OP_PUT.to_le_bytes().to_vec();
        tail.push(1);
        tail.extend_from_slice(&[0; 13]);
        let copy = draw_with_bitmap(2, 1, &tail, &[0x112233, 0x445566]);
        assert_eq!(r.server_message(msg::DRAW_COPY, &copy), RenderEvent::Drawn);
        assert_eq!(r.primary().unwrap().data, [0xff00_0000; 2], "an image without alpha is opaque");
        let counted: Vec<_> = r.stats.unsupported.keys().collect();
        assert_eq!(counted.len(), 1);
        assert!(counted[0].contains("DRAW_COPY onto a 8_A surface"), "{counted:?}");
        // On 1_A even a fill is counted; the alpha byte keeps its top bit.
        let create: Vec<u8> = [0u32, 2, 1, 1, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        r.server_message(msg::SURFACE_CREATE, &create);
        assert_eq!(r.server_message(msg::DRAW_FILL, &fill), RenderEvent::Drawn);
        assert_eq!(r.primary().unwrap().data, [0xff00_0000; 2]);
        assert_eq!(r.stats.unsupported.len(), 2, "{:?}", r.stats.unsupported);
    }

    #[test]
    fn unscaled_copies_between_depths_are_counted() {
        use super::super::canvas::ropd;
        let mut r = DisplayRenderer::new();
        r.server_message(msg::SURFACE_CREATE, &surface_create(2, 1));
        // Surface 1 in 16_565, surface 2 in 32_ARGB, both 2x1.
        for (id, format) in [(1u32, 80u32), (2, 96)] {
            let create: Vec<u8> = [id, 2, 1, format, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
            r.server_message(msg::SURFACE_CREATE, &create);
        }
        let mut tail = ropd::OP_PUT.to_le_bytes().to_vec();
        tail.push(1);
        tail.extend_from_slice(&[0; 13]);
        let copy_from = |surface_id: u32| {
            let mut b = draw_with_bitmap(2, 1, &tail, &[]);
            let image_at = b.len() - 36;
            b.truncate(image_at + 8);
            b.extend_from_slice(&[104, 0]); // SURFACE, no flags
            b.extend_from_slice(&2u32.to_le_bytes());
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&surface_id.to_le_bytes());
            b
        };
        assert_eq!(r.server_message(msg::DRAW_COPY, &copy_from(2)), RenderEvent::Drawn);
        assert!(r.stats.unsupported.is_empty(), "{:?}", r.stats.unsupported);
        assert_eq!(r.server_message(msg::DRAW_COPY, &copy_from(1)), RenderEvent::Drawn);
        let counted: Vec<_> = r.stats.unsupported.keys().collect();
        assert_eq!(counted.len(), 1);
        assert!(counted[0].contains("DRAW_COPY from a 16-bit surface onto a 32-bit one"), "{counted:?}");
    }

    #[test]
    fn a_scaled_rop3_box_over_the_surface_limit_is_counted_not_allocated() {
        // Found by the renderer fuzz target: a 2x1 source scaled to a box of
        // 2^31-1 x 2^31-1 asked for 2^62 pixels and aborted the process.
        let mut r = DisplayRenderer::new();
        r.server_message(msg::SURFACE_CREATE, &surface_create(2, 1));
        let mut tail = vec![0, 0x96, 1];
        tail.extend_from_slice(&[0; 13]);
        let mut rop3 = draw_with_bitmap(2, 1, &tail, &[1, 2]);
        rop3[12..20].copy_from_slice(&[[0xff, 0xff, 0xff, 0x7f]; 2].concat()); // bbox bottom, right
        assert_eq!(r.server_message(msg::DRAW_ROP3, &rop3), RenderEvent::None);
        assert_eq!(r.primary().unwrap().data, [0, 0]);
        let counted: Vec<_> = r.stats.unsupported.keys().collect();
        assert!(counted.len() == 1 && counted[0].contains("scaled DRAW_ROP3 box over"), "{counted:?}");
        // Within the limit it is drawn (here 4x1 from 2x1, nearest; the
        // scaled x8r8g8b8 source reads alpha 0xff, as through pixman).
        let mut rop3 = draw_with_bitmap(2, 1, &tail, &[1, 2]);
        rop3[16..20].copy_from_slice(&4i32.to_le_bytes());
        assert_eq!(r.server_message(msg::DRAW_ROP3, &rop3), RenderEvent::Drawn);
        assert_eq!(r.primary().unwrap().data, [0xff00_0001; 2]);
    }

    #[test]
    fn opaque_rop3_masks_scaling_and_alpha_blend() {
        use super::super::canvas::ropd;
        let mut r = DisplayRenderer::new();
        r.server_message(msg::SURFACE_CREATE, &surface_create(2, 1));
        // DRAW_OPAQUE: the image, then a solid brush XORed over it.
        let mut tail = vec![1];
        tail.extend_from_slice(&0x00ff_0000u32.to_le_bytes());
        tail.extend_from_slice(&(ropd::OP_XOR).to_le_bytes());
        tail.push(1);
        tail.extend_from_slice(&[0; 13]);
        let opaque = draw_with_bitmap(2, 1, &tail, &[0x0000_00ff, 0x00ff_00ff]);
        assert_eq!(r.server_message(msg::DRAW_OPAQUE, &opaque), RenderEvent::Drawn);
        assert_eq!(r.primary().unwrap().data, [0x00ff_00ff, 0x0000_00ff]);
        // DRAW_ROP3 0x96 (pattern XOR source XOR destination), no brush.
        let mut tail = vec![0, 0x96, 1];
        tail.extend_from_slice(&[0; 13]);
        let rop3 = draw_with_bitmap(2, 1, &tail, &[0x00ff_00ff, 0x0000_00ff]);
        assert_eq!(r.server_message(msg::DRAW_ROP3, &rop3), RenderEvent::Drawn);
        assert_eq!(r.primary().unwrap().data, [0, 0]);
        // DRAW_FILL white through a 1-bpp mask that keeps pixel 1 only.
        let mut fill = 0u32.to_le_bytes().to_vec();
        for v in [0i32, 0, 1, 2] {
            fill.extend_from_slice(&v.to_le_bytes());
        }
        fill.push(0);
        fill.push(1);
        fill.extend_from_slice(&0x00ff_ffffu32.to_le_bytes());
        fill.extend_from_slice(&(ropd::OP_PUT).to_le_bytes());
        fill.push(0); // mask flags
        fill.extend_from_slice(&[0; 8]); // pos
        let at = fill.len() as u32 + 4;
        fill.extend_from_slice(&at.to_le_bytes());
        fill.extend_from_slice(&9u64.to_le_bytes());
        fill.extend_from_slice(&[0, 0, 2, 0, 0, 0, 1, 0, 0, 0]); // BITMAP 2x1
        fill.extend_from_slice(&[1, 4, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]); // 1BIT_LE, TOP_DOWN, stride 1
        fill.push(0b10);
        assert_eq!(r.server_message(msg::DRAW_FILL, &fill), RenderEvent::Drawn);
        assert_eq!(r.primary().unwrap().data, [0, 0x00ff_ffff]);
        // A 1x1 image scaled (nearest) onto the 2x1 box.
        let mut copy = 0u32.to_le_bytes().to_vec();
        for v in [0i32, 0, 1, 2] {
            copy.extend_from_slice(&v.to_le_bytes());
        }
        copy.push(0);
        copy.extend_from_slice(&57u32.to_le_bytes());
        for v in [0i32, 0, 1, 1] {
            copy.extend_from_slice(&v.to_le_bytes());
        }
        copy.extend_from_slice(&(ropd::OP_PUT).to_le_bytes());
        copy.push(1);
        copy.extend_from_slice(&[0; 13]);
        copy.extend_from_slice(&3u64.to_le_bytes());
        copy.extend_from_slice(&[0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 8, 4, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        copy.extend_from_slice(&0x0012_3456u32.to_le_bytes());
        assert_eq!(r.server_message(msg::DRAW_COPY, &copy), RenderEvent::Drawn);
        // Scaled through pixman from x8r8g8b8, which reads alpha 0xff.
        assert_eq!(r.primary().unwrap().data, [0xff12_3456, 0xff12_3456]);
        // DRAW_ALPHA_BLEND at alpha 0 leaves the surface alone.
        let mut blend = 0u32.to_le_bytes().to_vec();
        for v in [0i32, 0, 1, 2] {
            blend.extend_from_slice(&v.to_le_bytes());
        }
        blend.push(0);
        blend.extend_from_slice(&[0, 0]);
        blend.extend_from_slice(&(blend.len() as u32 + 20).to_le_bytes());
        for v in [0i32, 0, 1, 2] {
            blend.extend_from_slice(&v.to_le_bytes());
        }
        blend.extend_from_slice(&4u64.to_le_bytes());
        blend.extend_from_slice(&[0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 8, 4, 2, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]);
        blend.extend_from_slice(&[0; 8]);
        assert_eq!(r.server_message(msg::DRAW_ALPHA_BLEND, &blend), RenderEvent::Drawn);
        assert_eq!(r.primary().unwrap().data, [0xff12_3456, 0xff12_3456]);
        assert_eq!(r.stats.errors, 0, "{:?}", r.stats.error_samples);
        assert!(r.stats.unsupported.is_empty(), "{:?}", r.stats.unsupported);
    }

    #[test]
    fn draws_on_missing_surfaces_and_lists_are_errors_not_panics() {
        let mut r = DisplayRenderer::new();
        let blend = draw_with_bitmap(2, 1, &[0x08, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[1, 2]);
        assert_eq!(r.server_message(msg::DRAW_COPY, &blend), RenderEvent::None);
        assert_eq!(r.stats.errors, 1);
        // A SPICE_MSG_LIST whose offsets point nowhere.
        let list = [2u8, 0, 0xff, 0xff, 0, 0, 4, 0, 0, 0];
        assert_eq!(r.server_message(SPICE_MSG_LIST, &list), RenderEvent::None);
        assert!(r.stats.errors >= 2);
        // A surface far too large.
        assert_eq!(r.server_message(msg::SURFACE_CREATE, &surface_create(100_000, 100_000)), RenderEvent::None);
    }
}

#[cfg(test)]
mod hostile {
    use super::*;
    use crate::framing::MessageAssembler;
    use crate::link::HeaderKind;

    const QEMU_DISPLAY_S2C: &[u8] = include_bytes!("../../tests/fixtures/qemu-bios-display-s2c.bin");

    /// Thousands of randomly damaged copies of a real display stream: the
    /// renderer reports errors, never panics (peer input must not crash
    /// the proxy).
    #[test]
    fn mutated_real_streams_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..1500 {
            let mut stream = QEMU_DISPLAY_S2C.to_vec();
            for _ in 0..1 + round % 8 {
                let i = (next() % stream.len() as u64) as usize;
                stream[i] = next() as u8;
            }
            let mut a = MessageAssembler::new(HeaderKind::Mini);
            let mut r = DisplayRenderer::new();
            if let Ok(msgs) = a.feed(&stream) {
                for (h, body) in msgs {
                    r.server_message(h.msg_type, &body);
                }
            }
        }
    }
}
