//! The OpenH264 encoder, set up for desktop recording, and its output as MP4
//! samples (length-prefixed NAL units, parameter sets kept in band).

use std::time::Duration;

use openh264::OpenH264API;
use openh264::Timestamp;
use openh264::encoder::{
    Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, QpRange, RateControlMode,
    SpsPpsStrategy, UsageType, VuiConfig,
};

use super::convert::Picture;
use super::{VideoConfig, VideoError};

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// One encoded picture, as an MP4 sample.
pub(super) struct Sample {
    /// NAL units, each preceded by its length (4 bytes, big-endian).
    pub(super) data: Vec<u8>,
    /// It holds an IDR picture.
    pub(super) keyframe: bool,
}

/// An encoder for one picture size.
pub(super) struct H264 {
    encoder: Encoder,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    started: bool,
}

impl H264 {
    pub(super) fn new(config: &VideoConfig) -> Result<H264, VideoError> {
        let usage =
            if config.screen_content { UsageType::ScreenContentRealTime } else { UsageType::CameraVideoRealTime };
        // Constant quantizer: the buffer-based rate control lowers the QP one
        // step per frame down to the range's minimum, so a one-value range
        // pins it. It also keeps OpenH264 quiet (the other modes warn without
        // frame skipping, and skipping would lose frames). IDR pictures come
        // when asked for (`force_intra_frame`), not on scene changes (screen
        // content mode wants scene change detection for its reference
        // choices; an IDR it would add is flagged as such all the same).
        let encoder_config = EncoderConfig::new()
            .usage_type(usage)
            .rate_control_mode(RateControlMode::Bufferbased)
            .qp(QpRange::new(config.qp, config.qp))
            .skip_frames(false)
            .scene_change_detect(config.screen_content)
            .adaptive_quantization(false)
            .background_detection(false)
            .max_frame_rate(FrameRate::from_hz(config.max_fps as f32))
            .intra_frame_period(IntraFramePeriod::from_num_frames(0))
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .complexity(Complexity::Medium)
            .num_threads(config.threads)
            .vui(VuiConfig::bt709());
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), encoder_config)
            .map_err(|error| VideoError::Encoder(error.to_string()))?;
        Ok(H264 { encoder, sps: None, pps: None, started: false })
    }

    /// The sequence and picture parameter sets (known after the first picture).
    pub(super) fn parameter_sets(&self) -> Option<(&[u8], &[u8])> {
        Some((self.sps.as_deref()?, self.pps.as_deref()?))
    }

    /// Encodes `picture` shown at `t`. `None` if the encoder skipped it.
    pub(super) fn encode(&mut self, picture: &Picture, idr: bool, t: Duration) -> Result<Option<Sample>, VideoError> {
        if idr && self.started {
            self.encoder.force_intra_frame();
        }
        self.started = true;
        let timestamp = Timestamp::from_millis(u64::try_from(t.as_millis()).unwrap_or(u64::MAX / 2));
        let stream = self
            .encoder
            .encode_at(&picture.slices(), timestamp)
            .map_err(|error| VideoError::Encoder(error.to_string()))?;
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        let mut data = Vec::new();
        let mut keyframe = false;
        for layer in (0..stream.num_layers()).filter_map(|i| stream.layer(i)) {
            for nal in (0..layer.nal_count()).filter_map(|i| layer.nal_unit(i)) {
                let nal = strip_start_code(nal);
                let Some(&header) = nal.first() else { continue };
                let kind = header & 0x1f;
                // Parameter sets stay in the stream (`avc3`); the first ones
                // also go into the sample entry.
                match kind {
                    NAL_SPS if self.sps.is_none() => self.sps = Some(nal.to_vec()),
                    NAL_PPS if self.pps.is_none() => self.pps = Some(nal.to_vec()),
                    _ => {}
                }
                keyframe |= kind == NAL_IDR;
                let len = u32::try_from(nal.len()).map_err(|_| VideoError::Encoder("NAL unit over 4 GiB".into()))?;
                data.extend_from_slice(&len.to_be_bytes());
                data.extend_from_slice(nal);
            }
        }
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(Sample { data, keyframe }))
    }
}

/// A NAL unit without its Annex B start code.
fn strip_start_code(nal: &[u8]) -> &[u8] {
    let zeros = nal.iter().take_while(|&&b| b == 0).count();
    if zeros >= 2 && nal.get(zeros) == Some(&1) { &nal[zeros + 1..] } else { nal }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::Frame;
    use crate::video::convert::Geometry;
    use std::sync::Arc;

    #[test]
    fn start_codes_are_stripped() {
        assert_eq!(strip_start_code(&[0, 0, 0, 1, 0x65, 9]), [0x65, 9]);
        assert_eq!(strip_start_code(&[0, 0, 1, 0x41]), [0x41]);
        assert_eq!(strip_start_code(&[0x41, 0, 0, 1]), [0x41, 0, 0, 1]);
    }

    #[test]
    fn samples_are_length_prefixed_and_keyframes_flagged() {
        let config = VideoConfig::default();
        let mut h264 = H264::new(&config).unwrap();
        let geometry = Geometry::new(64, 48);
        let mut picture = Picture::new(geometry);
        let pixels: Vec<u32> = (0..64 * 48u32).map(|i| 0xff00_0000 | (i.wrapping_mul(2654435761) >> 8)).collect();
        picture.fill(&Frame::new(Duration::ZERO, 64, 48, Arc::new(pixels)).unwrap()).unwrap();
        let mut kinds = Vec::new();
        for (i, idr) in [true, false, true].into_iter().enumerate() {
            let sample = h264.encode(&picture, idr, Duration::from_millis(i as u64 * 40)).unwrap().unwrap();
            assert_eq!(sample.keyframe, idr);
            let mut rest = sample.data.as_slice();
            while !rest.is_empty() {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                kinds.push(rest[4] & 0x1f);
                rest = &rest[4 + len..];
            }
        }
        assert_eq!(kinds.iter().filter(|&&k| k == NAL_SPS).count(), 2, "in band with each IDR: {kinds:?}");
        assert_eq!(kinds.iter().filter(|&&k| k == NAL_PPS).count(), 2, "{kinds:?}");
        assert!(kinds.contains(&NAL_IDR) && kinds.contains(&1), "{kinds:?}");
        let (sps, pps) = h264.parameter_sets().unwrap();
        assert_eq!(sps[0] & 0x1f, NAL_SPS);
        assert_eq!(pps[0] & 0x1f, NAL_PPS);
    }
}
