//! Answers already given on one connection, by message id: a CALL repeated with the same
//! id is a retransmission and gets the earlier answer, never a second effect. Bounded;
//! the oldest answer is forgotten first. Both ends of a connection use it.

use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct AnswerMemory {
    answers: VecDeque<(String, String)>,
    capacity: usize,
}

impl AnswerMemory {
    pub fn new(capacity: usize) -> AnswerMemory {
        AnswerMemory {
            answers: VecDeque::new(),
            capacity,
        }
    }

    /// The answer already sent for message `id`, if remembered.
    pub fn answer_for(&self, id: &str) -> Option<&str> {
        self.answers
            .iter()
            .find(|(seen, _)| seen == id)
            .map(|(_, answer)| answer.as_str())
    }

    /// Remembers `answer` (frame text) for message `id`.
    pub fn remember(&mut self, id: String, answer: String) {
        self.answers.push_back((id, answer));
        if self.answers.len() > self.capacity {
            self.answers.pop_front();
        }
    }

    /// A new connection: message ids start afresh.
    pub fn clear(&mut self) {
        self.answers.clear();
    }
}
