//! Lossy and lossless EDF over unit-time messages (one message per slot),
//! the pure form of what the data path does per message (Q.Sockets §4.2.2;
//! shared/notes/dwcs-edf.md). [`run`] keeps released messages in a binary
//! heap by deadline (O(log n) per slot); [`run_reference`] scans a list and
//! serves as the reference model in tests.
use std::{cmp::Reverse, collections::BinaryHeap};

/// A message: released (queued) at slot `release`, due by the end of slot
/// `deadline` (it meets its deadline if sent in a slot < `deadline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// Slot the message becomes available.
    pub release: u64,
    /// First slot that is too late.
    pub deadline: u64,
}

/// What happened to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent before its deadline.
    OnTime,
    /// Sent at or after its deadline (lossless only).
    Late,
    /// Dropped because it could no longer meet its deadline (lossy only).
    Dropped,
}

/// Runs EDF over `msgs` until every message is decided: each slot sends the
/// released message with the earliest deadline (ties: lower index first).
/// Lossy EDF first drops every released message whose deadline has passed
/// (it can no longer arrive in time); lossless sends those late.
pub fn run(msgs: &[Message], lossy: bool) -> Vec<Outcome> {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by_key(|&i| (msgs[i].release, i));
    let mut out = vec![Outcome::Dropped; msgs.len()];
    let mut ready = BinaryHeap::new();
    let (mut next, mut slot, mut done) = (0, 0u64, 0);
    while done < msgs.len() {
        while next < order.len() && msgs[order[next]].release <= slot {
            let i = order[next];
            ready.push(Reverse((msgs[i].deadline, i)));
            next += 1;
        }
        if lossy {
            while let Some(&Reverse((d, i))) = ready.peek() {
                if d > slot {
                    break;
                }
                ready.pop();
                out[i] = Outcome::Dropped;
                done += 1;
            }
        }
        if let Some(Reverse((d, i))) = ready.pop() {
            out[i] = if slot < d { Outcome::OnTime } else { Outcome::Late };
            done += 1;
        }
        slot += 1;
    }
    out
}

/// The same decisions as [`run`] by a linear scan per slot.
pub fn run_reference(msgs: &[Message], lossy: bool) -> Vec<Outcome> {
    let mut out: Vec<Option<Outcome>> = vec![None; msgs.len()];
    let mut slot = 0u64;
    while out.iter().any(Option::is_none) {
        let released = |out: &[Option<Outcome>], i: usize| out[i].is_none() && msgs[i].release <= slot;
        if lossy {
            for i in 0..msgs.len() {
                if released(&out, i) && msgs[i].deadline <= slot {
                    out[i] = Some(Outcome::Dropped);
                }
            }
        }
        let pick = (0..msgs.len()).filter(|&i| released(&out, i)).min_by_key(|&i| (msgs[i].deadline, i));
        if let Some(i) = pick {
            out[i] = Some(if slot < msgs[i].deadline { Outcome::OnTime } else { Outcome::Late });
        }
        slot += 1;
    }
    out.into_iter().map(|o| o.expect("decided")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_drops_what_lossless_sends_late() {
        // Three messages due by slot 2, released together: one cannot make it.
        let m = [Message { release: 0, deadline: 2 }; 3];
        assert_eq!(run(&m, false), vec![Outcome::OnTime, Outcome::OnTime, Outcome::Late]);
        assert_eq!(run(&m, true), vec![Outcome::OnTime, Outcome::OnTime, Outcome::Dropped]);
    }
}
