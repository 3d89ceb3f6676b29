//! Renegotiation of a member's `sub` connection, without IO: the SFU offers whenever the
//! tracks it sends change or the member asks for an ICE restart, but never while an offer
//! waits for its answer (so the two sides never offer at once, and no rollback is ever
//! needed). After the first offer, changes of tracks wait until `sub` is connected: a
//! client given a second offer while its ICE is still checking may answer it with new
//! ICE credentials (webrtc-rs 0.17 does), an ICE restart nobody asked for.
//!
//! # Call contract
//! - Inputs: [`Negotiator::tracks_changed`], [`Negotiator::restart_ice`],
//!   [`Negotiator::handle_answer`], [`Negotiator::connected`].
//! - Output: after any input (and after each turn of the peer task), call
//!   [`Negotiator::poll_offer`]; when it returns a plan, create and send that offer, and
//!   report [`Negotiator::offer_failed`] if that could not be done.

use preau_live::signal::{SignalCode, SignalError};

/// An offer to make now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfferPlan {
    /// With new ICE credentials.
    pub ice_restart: bool,
}

/// The `sub` connection's offer/answer state.
#[derive(Clone, Debug, Default)]
pub struct Negotiator {
    offering: bool,
    dirty: bool,
    restart: bool,
    /// An offer was made once.
    offered: bool,
    /// `sub` connected once.
    up: bool,
}

impl Negotiator {
    /// Whether an offer waits for its answer.
    pub fn is_offering(&self) -> bool {
        self.offering
    }

    /// A track was added to or removed from `sub`.
    pub fn tracks_changed(&mut self) {
        self.dirty = true;
    }

    /// The member asked for new ICE credentials on `sub`.
    pub fn restart_ice(&mut self) {
        self.restart = true;
    }

    /// `sub` is connected: changes held since the first offer may be offered.
    pub fn connected(&mut self) {
        self.up = true;
    }

    /// An answer arrived; `no_offer` when none was asked for. Call before applying it.
    pub fn handle_answer(&mut self) -> Result<(), SignalError> {
        if !self.offering {
            return Err(SignalError::new(SignalCode::NoOffer, "no offer to answer"));
        }
        Ok(())
    }

    /// The answer was applied: the next change may be offered.
    pub fn answer_applied(&mut self) {
        self.offering = false;
    }

    /// The offer to make now, if something changed and no offer is pending.
    pub fn poll_offer(&mut self) -> Option<OfferPlan> {
        if self.offering || !(self.dirty || self.restart) {
            return None;
        }
        // A restart is asked for by the client itself, connected or not.
        if self.offered && !self.up && !self.restart {
            return None;
        }
        let plan = OfferPlan { ice_restart: self.restart };
        self.dirty = false;
        self.restart = false;
        self.offering = true;
        self.offered = true;
        Some(plan)
    }

    /// The planned offer could not be made or sent: keep what it was to carry, so the
    /// next poll tries again.
    pub fn offer_failed(&mut self, plan: OfferPlan) {
        self.offering = false;
        self.dirty = true;
        self.restart |= plan.ice_restart;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_one_at_a_time_and_carries_changes_over() {
        let mut n = Negotiator::default();
        n.connected();
        assert_eq!(n.poll_offer(), None, "nothing changed");
        assert_eq!(n.handle_answer().map_err(|e| e.code), Err(SignalCode::NoOffer));
        n.tracks_changed();
        assert_eq!(n.poll_offer(), Some(OfferPlan { ice_restart: false }));
        assert_eq!(n.poll_offer(), None, "one offer at a time");
        // Changes while an offer waits are offered after its answer.
        n.tracks_changed();
        n.restart_ice();
        assert_eq!(n.poll_offer(), None);
        assert!(n.handle_answer().is_ok());
        assert!(n.is_offering(), "until the answer is applied");
        n.answer_applied();
        assert_eq!(n.poll_offer(), Some(OfferPlan { ice_restart: true }));
        n.answer_applied();
        assert_eq!(n.poll_offer(), None);
    }

    #[test]
    fn a_second_offer_waits_for_the_connection_unless_the_client_restarts_ice() {
        let mut n = Negotiator::default();
        n.tracks_changed();
        assert_eq!(n.poll_offer(), Some(OfferPlan { ice_restart: false }), "the first offer goes at once");
        assert!(n.handle_answer().is_ok());
        n.answer_applied();
        n.tracks_changed();
        assert_eq!(n.poll_offer(), None, "held until `sub` connects");
        n.connected();
        assert_eq!(n.poll_offer(), Some(OfferPlan { ice_restart: false }));
        let mut m = Negotiator::default();
        m.tracks_changed();
        let _ = m.poll_offer();
        m.answer_applied();
        m.restart_ice();
        assert_eq!(m.poll_offer(), Some(OfferPlan { ice_restart: true }), "a client that never connected restarts");
    }

    #[test]
    fn a_failed_offer_is_tried_again() {
        let mut n = Negotiator::default();
        n.restart_ice();
        let plan = n.poll_offer().expect("offer");
        n.offer_failed(plan);
        assert!(!n.is_offering());
        assert_eq!(n.poll_offer(), Some(OfferPlan { ice_restart: true }));
    }
}
