//! Where a run stands: the days it has finished, so that a run stopped (killed, cancelled,
//! failed) resumes with the days left. A plain serialisable value: the CLI keeps it in a
//! file, the `Reprocess` resource will keep it in its status.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    pub tenant: String,
    /// The run's first and last UTC day (both included).
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// The sites replayed (empty: all).
    pub sites: Vec<String>,
    /// The processing identity the days are replayed with.
    pub processing: String,
    pub dry_run: bool,
    /// Days finished: swapped (or, in a dry run, compared), tiers included.
    pub done: BTreeSet<NaiveDate>,
}

impl Checkpoint {
    /// Whether `other` describes the same run (everything but the days done).
    pub fn same_run(&self, other: &Checkpoint) -> bool {
        (
            &self.tenant,
            self.first_day,
            self.last_day,
            &self.sites,
            &self.processing,
            self.dry_run,
        ) == (
            &other.tenant,
            other.first_day,
            other.last_day,
            &other.sites,
            &other.processing,
            other.dry_run,
        )
    }

    /// `resume` if it is a checkpoint of this run, else an error naming what differs.
    pub(super) fn resume_from(self, resume: Option<Checkpoint>) -> Result<Checkpoint> {
        match resume {
            None => Ok(self),
            Some(saved) if saved.same_run(&self) => Ok(Checkpoint {
                done: saved.done,
                ..self
            }),
            Some(saved) => Err(Error::InvalidReplay(format!(
                "the checkpoint is of another run (tenant {}, days {} to {}, sites {:?}, {}, dry run {}); \
                 this one is tenant {}, days {} to {}, sites {:?}, {}, dry run {}",
                saved.tenant,
                saved.first_day,
                saved.last_day,
                saved.sites,
                saved.processing,
                saved.dry_run,
                self.tenant,
                self.first_day,
                self.last_day,
                self.sites,
                self.processing,
                self.dry_run
            ))),
        }
    }
}
