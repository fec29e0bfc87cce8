//! When to encode what: the rate limit, keyframes, keyframe repeats and
//! refinement passes, decided from timestamps alone (no encoder, no clock).
//!
//! The encoder thread feeds it frames ([`Timeline::offer`]) and, on the wall
//! clock, the current time ([`Timeline::advance`]); it answers with the
//! [`Action`]s to perform, in order, with strictly increasing times.

use std::time::Duration;

use super::Frame;

/// Something to encode.
#[derive(Debug)]
pub(super) enum Action {
    /// Encode this frame, shown from `t`.
    Content {
        /// The frame.
        frame: Frame,
        /// Its presentation time (its own, or later if rate-limited).
        t: Duration,
        /// Force an IDR picture.
        idr: bool,
        /// The size changed (or first frame): start a new file at `t`.
        new_file: bool,
    },
    /// Encode the last picture again as an IDR at `t` (static screen).
    Repeat {
        /// Presentation time.
        t: Duration,
    },
    /// Encode the last picture again as a P picture at `t`, improving it.
    Refine {
        /// Presentation time.
        t: Duration,
    },
}

/// The smallest step between two samples when a timestamp has to be moved
/// after the previous sample.
pub(super) const MIN_STEP: Duration = Duration::from_millis(1);

/// Refinement comes at least this long after the last picture, so that a
/// steady stream of frames never triggers it.
const REFINE_DELAY: Duration = Duration::from_millis(250);

struct Shown {
    width: u32,
    height: u32,
    /// Time of the last content frame (the rate limit's anchor).
    content: Duration,
    /// Time of the last sample of any kind.
    sample: Duration,
    /// Time of the last IDR picture.
    idr: Duration,
    /// The last picture has had its refinement pass.
    refined: bool,
}

/// The scheduling state.
pub(super) struct Timeline {
    min_interval: Duration,
    keyframe_interval: Duration,
    refine_delay: Duration,
    shown: Option<Shown>,
    candidate: Option<Frame>,
    dropped: u64,
}

/// What is due next, in order of priority for equal times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Candidate,
    Repeat,
    Refine,
}

impl Timeline {
    pub(super) fn new(min_interval: Duration, keyframe_interval: Duration) -> Timeline {
        Timeline {
            min_interval,
            keyframe_interval,
            refine_delay: min_interval.max(REFINE_DELAY),
            shown: None,
            candidate: None,
            dropped: 0,
        }
    }

    /// Frames dropped by the rate limit since the last call.
    pub(super) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// A frame arrived.
    pub(super) fn offer(&mut self, frame: Frame, actions: &mut Vec<Action>) {
        let Some(shown) = &self.shown else {
            let t = frame.at();
            self.content(frame, t, actions);
            return;
        };
        let next_slot = shown.content + self.min_interval;
        if frame.at() < next_slot {
            if self.candidate.replace(frame).is_some() {
                self.dropped += 1;
            }
            return;
        }
        if self.candidate.is_some() && frame.at() < next_slot + self.min_interval {
            // No room for the candidate's own slot before this newer frame.
            self.candidate = None;
            self.dropped += 1;
        }
        // Shows the candidate (if still there) at its slot, and whatever else
        // is due before this frame.
        self.run_until(frame.at(), false, actions);
        let t = frame.at();
        self.content(frame, t, actions);
    }

    /// The wall clock says `now`: perform what is due at or before it.
    pub(super) fn advance(&mut self, now: Duration, actions: &mut Vec<Action>) {
        self.run_until(now, true, actions);
    }

    /// When [`advance`](Self::advance) next has something to do.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        self.next_due().map(|(t, _)| t)
    }

    /// The recording ends at `end` (`None`: one frame interval after the last
    /// picture): performs what is due before it, including a last refinement
    /// pass, and returns the end of the last sample (never before it).
    pub(super) fn finish(&mut self, end: Option<Duration>, actions: &mut Vec<Action>) -> Option<Duration> {
        let shown = self.shown.as_ref()?;
        let mut end = end.unwrap_or_else(|| {
            let last = shown.sample.max(shown.content + self.min_interval * u32::from(self.candidate.is_some()));
            last + self.min_interval
        });
        if self.candidate.is_some() && shown.content + self.min_interval >= end {
            // Its slot is too late: shown half-way to the end instead.
            let t = midpoint(shown.sample, end);
            if let Some(candidate) = self.candidate.take() {
                self.content(candidate, t, actions);
            }
        }
        self.run_until(end, false, actions);
        let shown = self.shown.as_ref()?;
        if !shown.refined {
            let t = (shown.sample + self.refine_delay).min(midpoint(shown.sample, end));
            if t >= shown.sample + MIN_STEP {
                self.refine(t, actions);
            }
        }
        let shown = self.shown.as_ref()?;
        end = end.max(shown.sample + MIN_STEP);
        Some(end)
    }

    fn next_due(&self) -> Option<(Duration, Due)> {
        let shown = self.shown.as_ref()?;
        let candidate = self.candidate.as_ref().map(|_| (shown.content + self.min_interval, Due::Candidate));
        let repeat = Some((shown.idr + self.keyframe_interval, Due::Repeat));
        // No refinement of a picture about to be replaced.
        let refine =
            (!shown.refined && self.candidate.is_none()).then(|| (shown.sample + self.refine_delay, Due::Refine));
        [candidate, repeat, refine].into_iter().flatten().min()
    }

    fn run_until(&mut self, limit: Duration, inclusive: bool, actions: &mut Vec<Action>) {
        while let Some((t, due)) = self.next_due() {
            if t > limit || (t == limit && !inclusive) {
                break;
            }
            match due {
                Due::Candidate => {
                    if let Some(candidate) = self.candidate.take() {
                        self.content(candidate, t, actions);
                    }
                }
                Due::Repeat => {
                    if let Some(shown) = &mut self.shown {
                        shown.sample = t;
                        shown.idr = t;
                        shown.refined = false;
                    }
                    actions.push(Action::Repeat { t });
                }
                Due::Refine => self.refine(t, actions),
            }
        }
    }

    fn refine(&mut self, t: Duration, actions: &mut Vec<Action>) {
        if let Some(shown) = &mut self.shown {
            shown.sample = t;
            shown.refined = true;
        }
        actions.push(Action::Refine { t });
    }

    fn content(&mut self, frame: Frame, t: Duration, actions: &mut Vec<Action>) {
        // Timestamps only move forward.
        let t = self.shown.as_ref().map_or(t, |shown| t.max(shown.sample + MIN_STEP));
        let (width, height) = (frame.width(), frame.height());
        let (new_file, idr) = match &self.shown {
            None => (true, true),
            Some(shown) => {
                let new_file = (shown.width, shown.height) != (width, height);
                // An IDR when the next frame could come too late for one:
                // otherwise a repeat would be due just before that frame.
                (new_file, new_file || t + self.min_interval > shown.idr + self.keyframe_interval)
            }
        };
        let idr_at = match &self.shown {
            Some(shown) if !idr => shown.idr,
            _ => t,
        };
        self.shown = Some(Shown { width, height, content: t, sample: t, idr: idr_at, refined: false });
        actions.push(Action::Content { frame, t, idr, new_file });
    }
}

fn midpoint(a: Duration, b: Duration) -> Duration {
    if b > a { a + (b - a) / 2 } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const T: Duration = Duration::from_micros(33_333);
    const KI: Duration = Duration::from_secs(2);

    fn frame(ms: u64, width: u32) -> Frame {
        Frame::new(Duration::from_millis(ms), width, 2, Arc::new(vec![0; width as usize * 2])).unwrap()
    }

    /// (kind, time in ms, idr) of each action.
    fn summary(actions: &[Action]) -> Vec<(char, u64, bool)> {
        actions
            .iter()
            .map(|action| match action {
                Action::Content { t, idr, new_file, .. } => {
                    (if *new_file { 'N' } else { 'C' }, t.as_millis() as u64, *idr)
                }
                Action::Repeat { t } => ('K', t.as_millis() as u64, true),
                Action::Refine { t } => ('R', t.as_millis() as u64, false),
            })
            .collect()
    }

    #[test]
    fn rate_limit_keeps_the_newest_frame() {
        let mut timeline = Timeline::new(T, KI);
        let mut actions = Vec::new();
        for ms in [0, 5, 10, 20] {
            timeline.offer(frame(ms, 4), &mut actions);
        }
        assert_eq!(summary(&actions), [('N', 0, true)]);
        assert_eq!(timeline.take_dropped(), 2, "5 and 10 were replaced by 20");
        assert_eq!(timeline.next_deadline(), Some(T));
        timeline.advance(Duration::from_millis(40), &mut actions);
        assert_eq!(summary(&actions), [('N', 0, true), ('C', 33, false)]);
        // A candidate whose slot (66.7) leaves room before the next frame
        // (110 >= 66.7 + 33.3) is shown at its slot...
        let mut actions = Vec::new();
        timeline.offer(frame(50, 4), &mut actions);
        assert!(actions.is_empty());
        timeline.offer(frame(110, 4), &mut actions);
        assert_eq!(summary(&actions), [('C', 66, false), ('C', 110, false)]);
        // ...otherwise the newer frame replaces it.
        let mut actions = Vec::new();
        timeline.offer(frame(120, 4), &mut actions);
        timeline.offer(frame(150, 4), &mut actions);
        assert_eq!(summary(&actions), [('C', 150, false)]);
        assert_eq!(timeline.take_dropped(), 1);
    }

    #[test]
    fn static_screen_gets_refined_then_repeated_keyframes() {
        let mut timeline = Timeline::new(T, KI);
        let mut actions = Vec::new();
        timeline.offer(frame(0, 4), &mut actions);
        timeline.offer(frame(100, 4), &mut actions);
        timeline.offer(frame(5_500, 4), &mut actions);
        assert_eq!(
            summary(&actions),
            [
                ('N', 0, true),
                ('C', 100, false),
                ('R', 350, false),
                ('K', 2000, true),
                ('R', 2250, false),
                ('K', 4000, true),
                ('R', 4250, false),
                ('C', 5500, false),
            ]
        );
        // Finishing adds the last refinement, before the end.
        let mut actions = Vec::new();
        let end = timeline.finish(Some(Duration::from_millis(5_600)), &mut actions);
        assert_eq!(summary(&actions), [('R', 5550, false)]);
        assert_eq!(end, Some(Duration::from_millis(5_600)));
    }

    #[test]
    fn keyframe_interval_forces_idr_on_content() {
        let mut timeline = Timeline::new(T, KI);
        let mut actions = Vec::new();
        for ms in (0..=4_200).step_by(100) {
            timeline.offer(frame(ms, 4), &mut actions);
        }
        let idrs: Vec<u64> = summary(&actions).iter().filter(|a| a.2).map(|a| a.1).collect();
        assert_eq!(idrs, [0, 2000, 4000]);
    }

    #[test]
    fn size_change_starts_a_file_with_an_idr() {
        let mut timeline = Timeline::new(T, KI);
        let mut actions = Vec::new();
        timeline.offer(frame(0, 4), &mut actions);
        timeline.offer(frame(100, 6), &mut actions);
        timeline.offer(frame(200, 6), &mut actions);
        assert_eq!(summary(&actions), [('N', 0, true), ('N', 100, true), ('C', 200, false)]);
    }

    #[test]
    fn finish_places_a_late_candidate_before_the_end() {
        let mut timeline = Timeline::new(T, KI);
        let mut actions = Vec::new();
        timeline.offer(frame(0, 4), &mut actions);
        timeline.offer(frame(10, 4), &mut actions);
        let end = timeline.finish(Some(Duration::from_millis(20)), &mut actions);
        assert_eq!(summary(&actions), [('N', 0, true), ('C', 10, false), ('R', 15, false)]);
        assert_eq!(end, Some(Duration::from_millis(20)));
        // Without an end: one frame interval after the last picture.
        let mut timeline = Timeline::new(T, KI);
        let mut actions = Vec::new();
        timeline.offer(frame(0, 4), &mut actions);
        let end = timeline.finish(None, &mut actions).unwrap();
        assert_eq!(end, T);
        assert_eq!(summary(&actions), [('N', 0, true), ('R', 16, false)]);
    }

    #[test]
    fn late_timestamps_are_moved_after_the_previous_sample() {
        let mut timeline = Timeline::new(T, KI);
        let mut actions = Vec::new();
        timeline.offer(frame(0, 4), &mut actions);
        timeline.advance(Duration::from_millis(2_000), &mut actions);
        // A frame stamped before the repeat the clock already caused.
        timeline.offer(frame(1_990, 4), &mut actions);
        assert_eq!(summary(&actions), [('N', 0, true), ('R', 250, false), ('K', 2000, true), ('C', 2001, false)]);
    }

    #[test]
    fn nothing_without_frames() {
        let mut timeline = Timeline::new(T, KI);
        let mut actions = Vec::new();
        assert_eq!(timeline.next_deadline(), None);
        assert_eq!(timeline.finish(Some(Duration::from_secs(1)), &mut actions), None);
        assert!(actions.is_empty());
    }
}
