//! DESIGN.md rule 4 as a property against a model: whatever sequence of resends
//! (some of which fail or stop before their message is accepted), redeems, verifies
//! and clock moves, a token works only while it is the newest one delivered to the
//! owner, unexpired, and the owner is unregistered; a resend that sent nothing takes
//! no link away; a redeemed token never works again.

mod common;

use std::time::Duration;

use common::*;
use owner_access::Error;
use owner_access::adapters::memory::Fault;
use owner_access::domain::TokenRejection;
use owner_access::service::DEFAULT_TOKEN_TTL;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Resend,
    /// A resend whose only message is refused (permanent) or that stops at once
    /// (fatal): nothing is accepted.
    FailedResend(bool),
    Redeem(usize),
    Verify(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Resend),
        2 => any::<bool>().prop_map(Op::FailedResend),
        3 => (0usize..6).prop_map(Op::Redeem),
        2 => (0usize..6).prop_map(Op::Verify),
        1 => (1u64..=20).prop_map(Op::Advance),
    ]
}

/// The model's view of one token.
#[derive(Debug, Clone)]
struct ModelToken {
    text: String,
    expires_at_day: u64,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn tokens_follow_the_model(ops in prop::collection::vec(op(), 1..14)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let w = world(1).await;
            let ttl_days = DEFAULT_TOKEN_TTL.as_secs() / 86_400;
            let mut tokens: Vec<ModelToken> = Vec::new();
            let mut registered = false;
            let mut day = 0u64;
            for op in ops {
                match op {
                    Op::Resend => {
                        let result = w.service.resend(&oid("e0")).await;
                        if registered {
                            prop_assert!(matches!(result, Err(Error::NotEligible { .. })), "a registered owner cannot be resent to");
                        } else {
                            prop_assert_eq!(result.unwrap().sent, 1);
                            let copies = w.transport.messages_to(&addr("e0@example.org"));
                            tokens.push(ModelToken {
                                text: token_in(&copies.last().unwrap().bytes),
                                expires_at_day: day + ttl_days,
                            });
                        }
                    }
                    Op::FailedResend(fatal) => {
                        let to = addr("e0@example.org");
                        let fault = if fatal { Fault::Fatal } else { Fault::Permanent };
                        w.transport.fail_address_times(&to, fault, 1);
                        let result = w.service.resend(&oid("e0")).await;
                        w.transport.clear_faults();
                        if registered {
                            prop_assert!(matches!(result, Err(Error::NotEligible { .. })), "a registered owner cannot be resent to");
                        } else {
                            let report = result.unwrap();
                            prop_assert_eq!(report.sent, 0, "{:?}", report);
                        }
                    }
                    Op::Redeem(i) | Op::Verify(i) if i >= tokens.len() => {
                        let fake = "A".repeat(43);
                        let unknown = matches!(
                            w.service.redeem(&fake).await,
                            Err(Error::InvalidToken { reason: TokenRejection::Unknown })
                        );
                        prop_assert!(unknown, "a token never issued is unknown");
                    }
                    Op::Redeem(i) | Op::Verify(i) => {
                        let newest = i + 1 == tokens.len();
                        let fresh = day < tokens[i].expires_at_day;
                        let should_work = newest && fresh && !registered;
                        let redeem = matches!(op, Op::Redeem(_));
                        let worked = if redeem {
                            w.service.redeem(&tokens[i].text).await.is_ok()
                        } else {
                            w.service.verify(&tokens[i].text).await.is_ok()
                        };
                        prop_assert_eq!(worked, should_work, "token {} of {}, day {}, registered {}", i, tokens.len(), day, registered);
                        if redeem && worked {
                            registered = true;
                        }
                    }
                    Op::Advance(days) => {
                        day += days;
                        w.clock.advance(Duration::from_secs(days * 86_400));
                    }
                }
            }
            Ok(())
        })?;
    }
}
