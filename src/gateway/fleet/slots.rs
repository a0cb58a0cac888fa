//! A channel's `max_concurrency` for the whole fleet: a lease on one of its slots in
//! Redis, held (and renewed) while the request runs, given back when it ends.

use std::sync::Arc;

use super::{Down, Fleet, LEASE, SLOT};

/// A fleet-wide slot: dropping it gives it back.
pub struct SlotGuard {
    fleet: Arc<Fleet>,
    number: u64,
    key: String,
    member: String,
}

impl Fleet {
    /// Takes one of `channel`'s `max` slots: `Ok(None)` when all are taken.
    pub async fn take_slot(self: &Arc<Self>, channel: &str, max: usize) -> Result<Option<SlotGuard>, Down> {
        let key = self.key(&["slots", "channel", channel]);
        let (number, member) = self.request();
        let mut take = SLOT.key(&key);
        take.arg(max).arg(&member).arg(LEASE.as_millis() as u64);
        if self.run::<i64>(&mut take).await? == 0 {
            return Ok(None);
        }
        self.hold(number, vec![(key.clone(), member.clone())]);
        Ok(Some(SlotGuard {
            fleet: self.clone(),
            number,
            key,
            member,
        }))
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.fleet.release(self.number);
        let fleet = self.fleet.clone();
        let give_back = redis::cmd("ZREM").arg(&self.key).arg(&self.member).to_owned();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // A slot not given back (Redis down) expires with its lease.
            runtime.spawn(async move { fleet.command::<i64>(&give_back).await });
        }
    }
}
