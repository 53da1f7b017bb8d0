//! What one dialog may ask of the SBC (issue 16): a peer in a call must not make it relay an
//! endless stream of re-INVITEs, INFOs or MESSAGEs, nor hold many transactions open at once.
//! BYE, ACK and CANCEL are never limited: a call must always be able to end.

use std::time::Instant;

/// In-dialog requests of one call waiting for their final response, both sides together.
const MAX_IN_FLIGHT: u8 = 8;
/// In-dialog requests a second, and the burst above it (DTMF by INFO sends a few a second).
const RATE: f32 = 10.0;
const BURST: f32 = 20.0;

/// The limits of one call's dialogs.
#[derive(Debug, Clone)]
pub(crate) struct DialogLimits {
    in_flight: u8,
    tokens: f32,
    last: Option<Instant>,
}

impl Default for DialogLimits {
    fn default() -> Self {
        Self { in_flight: 0, tokens: BURST, last: None }
    }
}

impl DialogLimits {
    /// Whether a new in-dialog request may be taken now, or why not (it is then refused with
    /// 503). Nothing is spent: [`Self::take`] does that once the request is sure to be relayed.
    pub(crate) fn check(&mut self, now: Instant) -> Result<(), &'static str> {
        let elapsed = self.last.map_or(0.0, |l| now.saturating_duration_since(l).as_secs_f32());
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        self.tokens = (self.tokens + elapsed * RATE).min(BURST);
        if self.in_flight >= MAX_IN_FLIGHT {
            return Err("dialog_in_flight");
        }
        if self.tokens < 1.0 {
            return Err("dialog_rate");
        }
        Ok(())
    }

    /// No request of the dialog is in flight.
    pub(crate) fn idle(&self) -> bool {
        self.in_flight == 0
    }

    /// A request [`Self::check`] allowed is relayed: it counts until [`Self::answered`].
    pub(crate) fn take(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
        self.in_flight = self.in_flight.saturating_add(1);
    }

    /// A request taken by [`Self::take`] got its final response.
    pub(crate) fn answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn in_flight_and_rate_are_bounded_and_recover() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let mut d = DialogLimits::default();
        let admit = |d: &mut DialogLimits, at| d.check(at).map(|()| d.take());
        for _ in 0..8 {
            assert_eq!(admit(&mut d, t0), Ok(()));
        }
        assert_eq!(admit(&mut d, t0), Err("dialog_in_flight"));
        for _ in 0..8 {
            d.answered();
        }
        for _ in 0..12 {
            assert_eq!(admit(&mut d, t0), Ok(()));
            d.answered();
        }
        assert_eq!(admit(&mut d, t0), Err("dialog_rate"), "the burst of 20 is spent");
        assert_eq!(d.check(t0), Err("dialog_rate"), "a check alone spends nothing");
        assert_eq!(admit(&mut d, t0 + Duration::from_millis(100)), Ok(()), "a tenth of a second brings one");
    }
}
