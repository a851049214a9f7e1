//! The plan's later stages: which appends and finishes take seqs (and how many per
//! thread), then the seq of every event, the sealed events and the rows that hold them.

use foldhash::{HashSet, HashSetExt};

use super::{Cursors, EventRows, Needs, Placed, Plan, RunRow, Target, Unique, Writes};
use crate::store::error::StoreError;
use crate::store::model::{Accepted, new_id};
use crate::store::sqlite::request::{Op, Outcome, mismatch};
use crate::wire::{EventRecord, StoredEvent, completed_body, seal, seal_json};

impl<'a> Plan<'a> {
    /// Counts the seqs each thread needs, in request order, from the running runs the
    /// check found (`targets`, by position in [`Plan::live`]) and the runs the close
    /// statement ended (`closed`, by position in [`Plan::finishes`]). Appends to a thread
    /// or run that cannot take them, an append after its run's end in this batch (as
    /// after an earlier batch's) and a second finish of a run fail here and reserve
    /// nothing.
    pub fn needs(&mut self, targets: &[Target], mut closed: Vec<Option<i64>>) -> Needs<'a> {
        let mut needs = Needs {
            threads: Unique::default(),
            finished_no: vec![None; closed.len()],
        };
        let mut ended: HashSet<&str> = HashSet::new();
        for (request, outcome) in self.batch.iter().zip(self.outcomes.iter_mut()) {
            let thread_id = request.thread_id.as_str();
            let count = match &request.op {
                Op::Accept { .. } => continue,
                Op::Append { events, .. } => {
                    let target = |record: &EventRecord| {
                        let pair = (record.run_id.as_str(), thread_id);
                        match self.live.get(&pair).map(|i| targets[i]) {
                            Some(Target::Running(_)) if ended.contains(pair.0) => {
                                Target::NotRunning
                            }
                            Some(target) => target,
                            None => Target::NoThread,
                        }
                    };
                    let error = if events.iter().any(|r| target(r) == Target::NoThread) {
                        Some(StoreError::ThreadNotFound)
                    } else if events
                        .iter()
                        .any(|r| !matches!(target(r), Target::Running(_)))
                    {
                        Some(StoreError::RunNotActive)
                    } else {
                        None
                    };
                    if let Some(e) = error {
                        *outcome = Some(Outcome::Failed(e));
                        continue;
                    }
                    events.len() as i64
                }
                Op::Finish { run_id, .. } => {
                    let first = self.finishes.get(&(run_id.as_str(), thread_id));
                    if let Some(i) = first.filter(|&i| closed[i].is_some()) {
                        needs.finished_no[i] = closed[i].take();
                        ended.insert(run_id);
                        1
                    } else {
                        *outcome = Some(Outcome::Failed(StoreError::RunNotActive));
                        continue;
                    }
                }
            };
            let i = needs.threads.add(thread_id, || (thread_id, 0));
            needs.threads.list[i].1 += count;
        }
        needs
    }

    /// Gives the new messages their runs and every accepted append and finish its seqs
    /// from its thread's reserved range (`cursors`), in request order; seals the events
    /// and files each into its run's event row (under the run `no` the check or the
    /// close found).
    pub fn assign(
        &mut self,
        placed: &Placed,
        mut cursors: Cursors,
        targets: &[Target],
        needs: &Needs<'a>,
    ) -> Result<Writes<'a>, StoreError> {
        let mut writes = Writes::default();
        for i in 0..self.batch.len() {
            if self.outcomes[i].is_some() {
                continue;
            }
            let request = &self.batch[i];
            let outcome = match &request.op {
                Op::Accept { .. } => self.new_run(i, placed, &mut writes.runs)?,
                _ => match cursors.get_mut(request.thread_id.as_str()) {
                    Some(cursor) => self.sealed(i, cursor, targets, needs, &mut writes.events)?,
                    // Its run was just closed in this thread: the database disagrees
                    // with itself, so let the whole batch retry alone.
                    None if matches!(request.op, Op::Finish { .. }) => {
                        return Err(StoreError::Database(
                            "finished a run whose thread has no row".into(),
                        ));
                    }
                    None => Outcome::Failed(StoreError::ThreadNotFound),
                },
            };
            self.outcomes[i] = Some(outcome);
        }
        Ok(writes)
    }

    /// The run row and ids of the new message at request `i`.
    fn new_run(
        &self,
        i: usize,
        placed: &Placed,
        runs: &mut Vec<RunRow<'a>>,
    ) -> Result<Outcome, StoreError> {
        let Op::Accept {
            user_id,
            client_id,
            content,
            agent,
            ..
        } = &self.batch[i].op
        else {
            return Err(mismatch());
        };
        let Some((thread_id, thread_no)) = placed.get(&i) else {
            return Err(StoreError::Database("a new message has no thread".into()));
        };
        let message_id = new_id("m");
        let run_id = new_id("r");
        runs.push(RunRow {
            id: run_id.clone(),
            thread_no: *thread_no,
            user_id,
            client_id,
            message_id: message_id.clone(),
            content,
            agent,
        });
        Ok(Outcome::Accepted(Accepted {
            thread_id: thread_id.clone(),
            message_id,
            run_id,
            duplicate: false,
        }))
    }

    /// The sealed events of the append or finish at request `i`, from `cursor` on.
    fn sealed(
        &self,
        i: usize,
        cursor: &mut i64,
        targets: &[Target],
        needs: &Needs<'a>,
        rows: &mut EventRows,
    ) -> Result<Outcome, StoreError> {
        let thread_id = self.batch[i].thread_id.as_str();
        let mut next = || {
            *cursor += 1;
            *cursor - 1
        };
        match &self.batch[i].op {
            Op::Accept { .. } => Err(mismatch()),
            Op::Append { events, .. } => {
                let mut stored = Vec::with_capacity(events.len());
                for record in events {
                    let no = match self.live.get(&(record.run_id.as_str(), thread_id)) {
                        Some(i) => match targets[i] {
                            Target::Running(no) => no,
                            _ => return Err(mismatch()),
                        },
                        None => return Err(mismatch()),
                    };
                    let seq = next();
                    let event = StoredEvent {
                        seq,
                        run_id: record.run_id.clone(),
                        json: seal_json(thread_id, seq, record),
                    };
                    rows.add(no, &event);
                    stored.push(event);
                }
                Ok(Outcome::Appended(stored))
            }
            Op::Finish {
                run_id,
                status,
                content,
                event,
                ..
            } => {
                let seq = next();
                let i = self
                    .finishes
                    .get(&(run_id.as_str(), thread_id))
                    .ok_or_else(mismatch)?;
                let no = needs.finished_no[i].ok_or_else(mismatch)?;
                let reply_id = &self.finishes.list[i].3;
                let body = completed_body(event.body.clone(), status, reply_id, content);
                let record = EventRecord {
                    run_id: run_id.clone(),
                    body,
                };
                let event = seal(thread_id, seq, record);
                rows.add(no, &event);
                Ok(Outcome::Finished(event))
            }
        }
    }

    /// Every request's outcome; one the stages never reached is a mismatch.
    pub fn into_outcomes(self) -> Vec<Outcome> {
        self.outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed(mismatch())))
            .collect()
    }
}
