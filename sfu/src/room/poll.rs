//! A class poll: a question, its choices, and who answered what. The room checks who
//! may ask and answer; this checks the poll itself.

use super::{PeerId, RoomError};
use std::collections::BTreeMap;

/// The open poll: a question, its choices, and who answered what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// Its id, unique in the room.
    pub id: u32,
    /// The question.
    pub question: String,
    /// The choices.
    pub choices: Vec<String>,
    /// Each voter's choice.
    pub answers: BTreeMap<PeerId, usize>,
}

/// Longest question, in characters.
const QUESTION_MAX: usize = 300;
/// Longest choice, in characters.
const CHOICE_MAX: usize = 100;
/// How many choices a poll has.
const CHOICES: std::ops::RangeInclusive<usize> = 2..=8;

impl Poll {
    /// A poll as the host asked it (trimmed), or `BadPoll`: an empty or overlong
    /// question or choice, fewer than 2 choices or more than 8.
    pub(crate) fn new(id: u32, question: &str, choices: &[String]) -> Result<Poll, RoomError> {
        let fits = |t: &str, max: usize| !t.trim().is_empty() && t.trim().chars().count() <= max;
        if !fits(question, QUESTION_MAX)
            || !CHOICES.contains(&choices.len())
            || !choices.iter().all(|c| fits(c, CHOICE_MAX))
        {
            return Err(RoomError::BadPoll);
        }
        Ok(Poll {
            id,
            question: question.trim().to_owned(),
            choices: choices.iter().map(|c| c.trim().to_owned()).collect(),
            answers: BTreeMap::new(),
        })
    }

    /// Takes `voter`'s answer: `NoPoll` for a choice it does not have, `AlreadyAnswered`
    /// the second time.
    pub(crate) fn answer(&mut self, voter: PeerId, choice: usize) -> Result<(), RoomError> {
        if choice >= self.choices.len() {
            return Err(RoomError::NoPoll);
        }
        if self.answers.contains_key(&voter) {
            return Err(RoomError::AlreadyAnswered);
        }
        self.answers.insert(voter, choice);
        Ok(())
    }

    /// Answers per choice.
    pub(crate) fn counts(&self) -> Vec<u32> {
        let mut c = vec![0u32; self.choices.len()];
        for &i in self.answers.values() {
            if let Some(n) = c.get_mut(i) {
                *n += 1;
            }
        }
        c
    }
}
