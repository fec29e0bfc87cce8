//! When to encode what, on a grid of `1 / fps` s ticks: which frame each
//! tick shows, keyframes, keyframe repeats and refinement passes, decided
//! from timestamps alone (no encoder, no clock).
//!
//! Tick `k` is at `k / fps` s on the recorder's clock. A frame taken at `t`
//! is first shown at tick `ceil(t * fps)` (the surface as it was at that
//! tick) and held until the next sample; a newer frame for the same tick
//! replaces it (counted as dropped). So every sample starts on the grid and
//! lasts a whole number of ticks, and players see the real frame rate.
//!
//! The encoder thread feeds it frames ([`Timeline::offer`]) and, on the wall
//! clock, the current time ([`Timeline::advance`]); it answers with the
//! [`Action`]s to perform, in order, with strictly increasing ticks.

use std::time::Duration;

use super::Frame;

/// Something to encode.
#[derive(Debug)]
pub(super) enum Action {
    /// Encode this frame, shown from tick `tick`.
    Content {
        /// The frame.
        frame: Frame,
        /// Its first tick.
        tick: u64,
        /// Force an IDR picture.
        idr: bool,
        /// The surface size changed (or first frame): a new encoder for the
        /// new size, starting with an IDR picture.
        new_size: bool,
    },
    /// Encode the last picture again as an IDR at `tick` (static screen).
    Repeat {
        /// Its tick.
        tick: u64,
    },
    /// Encode the last picture again as a P picture at `tick`, improving it.
    Refine {
        /// Its tick.
        tick: u64,
    },
}

/// Refinement comes at least this long after the last picture, so that a
/// steady stream of frames never triggers it.
const REFINE_DELAY: Duration = Duration::from_millis(250);

/// The grid: converts between recorder time and ticks of `1 / fps` s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Grid {
    fps: u32,
}

impl Grid {
    /// A grid of `fps` ticks a second (`fps >= 1`).
    pub(super) fn new(fps: u32) -> Grid {
        Grid { fps: fps.max(1) }
    }

    /// The first tick at or after `t`.
    pub(super) fn tick_at_or_after(self, t: Duration) -> u64 {
        let scaled = t.as_nanos() * u128::from(self.fps);
        u64::try_from(scaled.div_ceil(1_000_000_000)).unwrap_or(u64::MAX / 2)
    }

    /// The last tick at or before `t`.
    pub(super) fn tick_at_or_before(self, t: Duration) -> u64 {
        let scaled = t.as_nanos() * u128::from(self.fps);
        u64::try_from(scaled / 1_000_000_000).unwrap_or(u64::MAX / 2)
    }

    /// The time of tick `k` (rounded up to a nanosecond, so that the clock
    /// reading it has reached tick `k`).
    pub(super) fn time(self, k: u64) -> Duration {
        let nanos = (u128::from(k) * 1_000_000_000).div_ceil(u128::from(self.fps));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Whole ticks in `d`, at least one.
    fn ticks_in(self, d: Duration) -> u64 {
        self.tick_at_or_before(d).max(1)
    }
}

struct Shown {
    width: u32,
    height: u32,
    /// Tick of the last sample of any kind.
    sample: u64,
    /// Tick of the last IDR picture.
    idr: u64,
    /// The last picture has had its refinement pass.
    refined: bool,
}

/// The scheduling state.
pub(super) struct Timeline {
    grid: Grid,
    keyframe_ticks: u64,
    refine_ticks: u64,
    shown: Option<Shown>,
    /// The newest frame not shown yet, with the tick it will be shown at.
    pending: Option<(Frame, u64)>,
    dropped: u64,
}

/// What is due next, in order of priority for equal ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Pending,
    Repeat,
    Refine,
}

impl Timeline {
    /// `keyframe_interval` is rounded down to whole ticks (at least one).
    pub(super) fn new(grid: Grid, keyframe_interval: Duration) -> Timeline {
        Timeline {
            grid,
            keyframe_ticks: grid.ticks_in(keyframe_interval),
            refine_ticks: grid.tick_at_or_after(REFINE_DELAY).max(1),
            shown: None,
            pending: None,
            dropped: 0,
        }
    }

    /// Frames dropped (replaced for the same tick) since the last call.
    pub(super) fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// A frame arrived.
    pub(super) fn offer(&mut self, frame: Frame, actions: &mut Vec<Action>) {
        let earliest = self.shown.as_ref().map_or(0, |shown| shown.sample + 1);
        let mut tick = self.grid.tick_at_or_after(frame.at()).max(earliest);
        if let Some((_, pending)) = &self.pending
            && tick <= *pending
        {
            // The same tick: the newer picture is the one it shows.
            tick = *pending;
            self.pending = None;
            self.dropped += 1;
        }
        // Shows the pending frame (if still there) at its tick, and whatever
        // else is due before this frame's tick.
        self.run_until(tick, false, actions);
        self.pending = Some((frame, tick));
    }

    /// The wall clock says `now`: perform what is due at or before it.
    pub(super) fn advance(&mut self, now: Duration, actions: &mut Vec<Action>) {
        let tick = self.grid.tick_at_or_before(now);
        self.run_until(tick, true, actions);
    }

    /// When [`advance`](Self::advance) next has something to do.
    pub(super) fn next_deadline(&self) -> Option<Duration> {
        self.next_due().map(|(tick, _)| self.grid.time(tick))
    }

    /// The recording ends at `end` (`None`: one tick after the last
    /// picture): performs what is due before it, including the pending
    /// frame and a last refinement pass, and returns the tick the last
    /// sample ends at (moved later when a sample needs it).
    pub(super) fn finish(&mut self, end: Option<Duration>, actions: &mut Vec<Action>) -> Option<u64> {
        let last = match (&self.shown, &self.pending) {
            (_, Some((_, pending))) => *pending,
            (Some(shown), None) => shown.sample,
            (None, None) => return None,
        };
        let mut end = end.map_or(last + 1, |end| self.grid.tick_at_or_after(end));
        self.run_until(end, false, actions);
        if let Some((frame, tick)) = self.pending.take() {
            // Its tick is the end's (or later): it still gets shown.
            self.content(frame, tick, actions);
        }
        let shown = self.shown.as_ref()?;
        end = end.max(shown.sample + 1);
        if !shown.refined {
            let halfway = shown.sample + (end - shown.sample) / 2;
            let tick = (shown.sample + self.refine_ticks).min(halfway).max(shown.sample + 1);
            self.refine(tick, actions);
            end = end.max(tick + 1);
        }
        Some(end)
    }

    fn next_due(&self) -> Option<(u64, Due)> {
        let pending = self.pending.as_ref().map(|(_, tick)| (*tick, Due::Pending));
        let (repeat, refine) = match &self.shown {
            Some(shown) => (
                Some((shown.idr + self.keyframe_ticks, Due::Repeat)),
                // No refinement of a picture about to be replaced.
                (!shown.refined && self.pending.is_none()).then(|| (shown.sample + self.refine_ticks, Due::Refine)),
            ),
            None => (None, None),
        };
        [pending, repeat, refine].into_iter().flatten().min()
    }

    fn run_until(&mut self, limit: u64, inclusive: bool, actions: &mut Vec<Action>) {
        while let Some((tick, due)) = self.next_due() {
            if tick > limit || (tick == limit && !inclusive) {
                break;
            }
            match due {
                Due::Pending => {
                    if let Some((frame, tick)) = self.pending.take() {
                        self.content(frame, tick, actions);
                    }
                }
                Due::Repeat => {
                    if let Some(shown) = &mut self.shown {
                        shown.sample = tick;
                        shown.idr = tick;
                        shown.refined = false;
                    }
                    actions.push(Action::Repeat { tick });
                }
                Due::Refine => self.refine(tick, actions),
            }
        }
    }

    fn refine(&mut self, tick: u64, actions: &mut Vec<Action>) {
        if let Some(shown) = &mut self.shown {
            shown.sample = tick;
            shown.refined = true;
        }
        actions.push(Action::Refine { tick });
    }

    fn content(&mut self, frame: Frame, tick: u64, actions: &mut Vec<Action>) {
        let (width, height) = (frame.width(), frame.height());
        let (new_size, idr) = match &self.shown {
            None => (true, true),
            Some(shown) => {
                let new_size = (shown.width, shown.height) != (width, height);
                // An IDR when the next tick would be too late for one:
                // otherwise a repeat would be due there.
                (new_size, new_size || tick + 1 > shown.idr + self.keyframe_ticks)
            }
        };
        let idr_at = match &self.shown {
            Some(shown) if !idr => shown.idr,
            _ => tick,
        };
        self.shown = Some(Shown { width, height, sample: tick, idr: idr_at, refined: false });
        actions.push(Action::Content { frame, tick, idr, new_size });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const KI: Duration = Duration::from_secs(2);

    fn timeline() -> Timeline {
        Timeline::new(Grid::new(30), KI)
    }

    fn frame(ms: u64, width: u32) -> Frame {
        Frame::new(Duration::from_millis(ms), width, 2, Arc::new(vec![0; width as usize * 2])).unwrap()
    }

    /// (kind, tick, idr) of each action: N a new size, C content, K a
    /// keyframe repeat, R a refinement.
    fn summary(actions: &[Action]) -> Vec<(char, u64, bool)> {
        actions
            .iter()
            .map(|action| match action {
                Action::Content { tick, idr, new_size, .. } => (if *new_size { 'N' } else { 'C' }, *tick, *idr),
                Action::Repeat { tick } => ('K', *tick, true),
                Action::Refine { tick } => ('R', *tick, false),
            })
            .collect()
    }

    #[test]
    fn grid_conversions_round_the_right_way() {
        let grid = Grid::new(30);
        assert_eq!(grid.tick_at_or_after(Duration::ZERO), 0);
        assert_eq!(grid.tick_at_or_after(Duration::from_millis(1)), 1);
        assert_eq!(grid.tick_at_or_after(Duration::from_millis(100)), 3);
        assert_eq!(grid.tick_at_or_before(Duration::from_millis(66)), 1);
        for k in [1, 2, 7, 29, 30, 1_000_001] {
            assert_eq!(grid.tick_at_or_before(grid.time(k)), k, "the clock at tick {k}'s time has reached it");
        }
        assert_eq!(grid.time(45), Duration::from_millis(1500));
        assert_eq!(Grid::new(0), Grid::new(1));
    }

    #[test]
    fn each_tick_shows_the_newest_frame() {
        let mut timeline = timeline();
        let mut actions = Vec::new();
        // 0 ms is tick 0; 5, 10 and 20 ms all belong to tick 1.
        for ms in [0, 5, 10, 20] {
            timeline.offer(frame(ms, 4), &mut actions);
        }
        assert_eq!(summary(&actions), [('N', 0, true)]);
        assert_eq!(timeline.take_dropped(), 2, "5 and 10 were replaced by 20");
        assert_eq!(timeline.next_deadline(), Some(Grid::new(30).time(1)));
        timeline.advance(Duration::from_millis(40), &mut actions);
        assert_eq!(summary(&actions), [('N', 0, true), ('C', 1, false)]);
        // A frame for a later tick shows the pending one at its own tick.
        let mut actions = Vec::new();
        timeline.offer(frame(50, 4), &mut actions);
        assert!(actions.is_empty());
        timeline.offer(frame(110, 4), &mut actions);
        assert_eq!(summary(&actions), [('C', 2, false)]);
        timeline.advance(Duration::from_millis(140), &mut actions);
        assert_eq!(summary(&actions), [('C', 2, false), ('C', 4, false)]);
        // A frame stamped before the last sample goes to the next tick.
        let mut actions = Vec::new();
        timeline.offer(frame(60, 4), &mut actions);
        timeline.advance(Duration::from_millis(200), &mut actions);
        assert_eq!(summary(&actions), [('C', 5, false)]);
    }

    #[test]
    fn static_screen_gets_refined_then_repeated_keyframes() {
        let mut timeline = timeline();
        let mut actions = Vec::new();
        timeline.offer(frame(0, 4), &mut actions);
        timeline.offer(frame(100, 4), &mut actions);
        timeline.offer(frame(5_500, 4), &mut actions);
        assert_eq!(
            summary(&actions),
            [
                ('N', 0, true),
                ('C', 3, false),
                ('R', 11, false),
                ('K', 60, true),
                ('R', 68, false),
                ('K', 120, true),
                ('R', 128, false)
            ]
        );
        // Finishing shows the pending frame and adds the last refinement.
        let mut actions = Vec::new();
        let end = timeline.finish(Some(Duration::from_millis(5_600)), &mut actions);
        assert_eq!(summary(&actions), [('C', 165, false), ('R', 166, false)]);
        assert_eq!(end, Some(168));
    }

    #[test]
    fn keyframe_interval_forces_idr_on_content() {
        let mut timeline = timeline();
        let mut actions = Vec::new();
        for ms in (0..=4_200).step_by(100) {
            timeline.offer(frame(ms, 4), &mut actions);
        }
        let idrs: Vec<u64> = summary(&actions).iter().filter(|a| a.2).map(|a| a.1).collect();
        assert_eq!(idrs, [0, 60, 120]);
    }

    #[test]
    fn size_change_gets_a_new_encoder_and_an_idr() {
        let mut timeline = timeline();
        let mut actions = Vec::new();
        timeline.offer(frame(0, 4), &mut actions);
        timeline.offer(frame(100, 6), &mut actions);
        timeline.offer(frame(200, 6), &mut actions);
        timeline.finish(Some(Duration::from_millis(300)), &mut actions);
        assert_eq!(summary(&actions), [('N', 0, true), ('N', 3, true), ('C', 6, false), ('R', 7, false)]);
    }

    #[test]
    fn finish_without_an_end_lasts_one_tick_more() {
        let mut timeline = timeline();
        let mut actions = Vec::new();
        timeline.offer(frame(0, 4), &mut actions);
        let end = timeline.finish(None, &mut actions).unwrap();
        assert_eq!(summary(&actions), [('N', 0, true), ('R', 1, false)]);
        assert_eq!(end, 2, "the refinement needs a tick of its own");
    }

    #[test]
    fn late_timestamps_are_moved_after_the_previous_sample() {
        let mut timeline = timeline();
        let mut actions = Vec::new();
        timeline.offer(frame(0, 4), &mut actions);
        timeline.advance(Duration::from_millis(2_000), &mut actions);
        // A frame stamped before the repeat the clock already caused.
        timeline.offer(frame(1_990, 4), &mut actions);
        timeline.advance(Duration::from_millis(2_100), &mut actions);
        assert_eq!(summary(&actions), [('N', 0, true), ('R', 8, false), ('K', 60, true), ('C', 61, false)]);
    }

    #[test]
    fn nothing_without_frames() {
        let mut timeline = timeline();
        let mut actions = Vec::new();
        assert_eq!(timeline.next_deadline(), None);
        assert_eq!(timeline.finish(Some(Duration::from_secs(1)), &mut actions), None);
        assert!(actions.is_empty());
    }
}
