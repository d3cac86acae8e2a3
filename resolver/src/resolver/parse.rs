//! Stage 2 of the client path: the whole message is vetted (`query::parse`) and turned into
//! a [`ClientQuery`], or answered with the error it earns.
//!
//! Why a stage of its own: the mapping from a rejection to an answer and a counter is the
//! only policy here; the rules themselves live in `query`.

use std::ops::ControlFlow;

use super::{Resolver, Stage};
use crate::event::{AnswerKind, QueryOutcome, Transport};
use crate::query::{self, ClientQuery, Rejection};
use crate::response::{self, ErrorReply};
use crate::wire::rcode;

impl Resolver {
    /// Parses `query`; rejected ones are dropped or answered FORMERR / NOTIMP / BADVERS.
    pub(super) fn parse(
        &mut self,
        query: &[u8],
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Stage<ClientQuery> {
        match query::parse(query, transport) {
            Ok(q) => ControlFlow::Continue(q),
            Err(Rejection::Drop(reason)) => ControlFlow::Break(self.drop_query(reason)),
            Err(Rejection::Error {
                rcode: code,
                id,
                opcode,
                flags,
                question,
                edns,
            }) => {
                let kind = self.count_rejection(code);
                response::error(
                    out,
                    &ErrorReply {
                        id,
                        opcode,
                        client_flags: flags,
                        question: question.as_deref(),
                        edns,
                        rcode: code,
                        max_len: query.len(),
                    },
                    self.cfg.edns_udp_size,
                );
                ControlFlow::Break(QueryOutcome::Answered(kind))
            }
        }
    }

    /// Counts an error answer under its RCODE and names its kind.
    fn count_rejection(&mut self, code: u16) -> AnswerKind {
        match code {
            rcode::NOTIMP => {
                self.stats.notimp += 1;
                AnswerKind::NotImp
            }
            rcode::BADVERS => {
                self.stats.badvers += 1;
                AnswerKind::BadVers
            }
            _ => {
                self.stats.formerr += 1;
                AnswerKind::FormErr
            }
        }
    }
}
