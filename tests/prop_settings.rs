//! Every setting is checked at the edge: extreme send options, token lifetimes and
//! attachment limits are an `Error::InvalidSetting` from the builder, never a panic,
//! and options the builder accepts send a batch to the end. The ranges are written
//! out again here, as the model the builder is held to.

mod common;

use std::time::Duration;

use common::*;
use owner_access::invite::AttachmentLimits;
use owner_access::{
    Error, InMemoryRepository, InMemoryTransport, OwnerAccess, RetryPolicy, SendOptions,
};
use proptest::prelude::*;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Rates: the edges of the range, what a float can be, and anything in between.
fn rate() -> impl Strategy<Value = Option<f64>> {
    let edges = vec![
        0.0,
        -0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e-12,
        1e-300,
        5e-324,
        f64::MIN_POSITIVE,
        f64::MAX,
        1.0 / 3600.0,
        (1.0f64 / 3600.0).next_down(),
        (1.0f64 / 3600.0).next_up(),
        1e6,
        1e6f64.next_up(),
        1e300,
    ];
    prop_oneof![
        8 => Just(None),
        4 => (-3.5f64..6.0).prop_map(|e| Some(10f64.powf(e))),
        2 => prop::sample::select(edges).prop_map(Some),
        1 => (-20.0f64..20.0).prop_map(|e| Some(10f64.powf(e))),
        1 => any::<f64>().prop_map(Some),
    ]
}

/// Mostly the default, sometimes an extreme: so that cases with one setting at an
/// edge, which find which check is missing, are common.
fn or_default<T: Clone + std::fmt::Debug + 'static>(
    default: T,
    extreme: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![16 => Just(default), 1 => extreme].boxed()
}

/// Durations: zero, the largest, the edges of each range, and any.
fn duration() -> impl Strategy<Value = Duration> {
    let edges = vec![
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(1),
        Duration::from_millis(100),
        Duration::from_millis(100) - Duration::from_nanos(1),
        Duration::from_secs(1),
        Duration::from_secs(1) - Duration::from_nanos(1),
        Duration::from_secs(60),
        Duration::from_secs(60) + Duration::from_nanos(1),
        HOUR,
        HOUR + Duration::from_nanos(1),
        7 * DAY,
        7 * DAY + Duration::from_nanos(1),
        365 * DAY,
        365 * DAY + Duration::from_nanos(1),
        Duration::MAX,
    ];
    prop_oneof![
        3 => prop::sample::select(edges),
        1 => any::<u64>().prop_map(Duration::from_nanos),
        1 => any::<u64>().prop_map(Duration::from_secs),
    ]
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => prop::sample::select(vec![0, 1, 2, 100, 101, 1024, 1025, 10_000, 10_001, usize::MAX]),
        1 => any::<usize>(),
    ]
}

fn attempts() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => prop::sample::select(vec![0u32, 1, 3, 100, 101, u32::MAX]),
        1 => any::<u32>(),
    ]
}

#[derive(Debug, Clone)]
struct Settings {
    options: SendOptions,
    token_ttl: Duration,
    limits: AttachmentLimits,
}

fn settings() -> impl Strategy<Value = Settings> {
    let o = SendOptions::default();
    let limits = AttachmentLimits::default();
    (
        (
            or_default(o.concurrency, count()),
            rate(),
            or_default(o.retry.max_attempts, attempts()),
            or_default(o.retry.initial_backoff, duration()),
            or_default(o.retry.max_backoff, duration()),
            or_default(o.unreachable_after, count()),
        ),
        (
            or_default(o.claim_lease, duration()),
            or_default(o.outcome_group, count()),
            or_default(o.outcome_delay, duration()),
            or_default(owner_access::service::DEFAULT_TOKEN_TTL, duration()),
        ),
        (
            or_default(limits.max_each, count()),
            or_default(limits.max_total, count()),
        ),
    )
        .prop_map(
            |(
                (concurrency, rate, max_attempts, initial, max_backoff, unreachable),
                (lease, group, delay, ttl),
                (each, total),
            )| Settings {
                options: SendOptions {
                    concurrency,
                    rate_per_second: rate,
                    retry: RetryPolicy {
                        max_attempts,
                        initial_backoff: initial,
                        max_backoff,
                    },
                    unreachable_after: unreachable,
                    claim_lease: lease,
                    outcome_group: group,
                    outcome_delay: delay,
                },
                token_ttl: ttl,
                limits: AttachmentLimits {
                    max_each: each,
                    max_total: total,
                },
            },
        )
}

/// The model: which settings the builder must accept.
fn acceptable(s: &Settings) -> bool {
    let o = &s.options;
    let rate_ok = match o.rate_per_second {
        None => true,
        Some(r) => r.is_finite() && (1.0 / 3600.0..=1e6).contains(&r),
    };
    (1..=1024).contains(&o.concurrency)
        && rate_ok
        && (1..=100).contains(&o.retry.max_attempts)
        && o.retry.max_backoff <= HOUR
        && o.retry.initial_backoff <= o.retry.max_backoff
        && o.unreachable_after >= 1
        && o.claim_lease >= Duration::from_millis(100)
        && o.claim_lease <= 7 * DAY
        && (1..=10_000).contains(&o.outcome_group)
        && o.outcome_delay <= Duration::from_secs(60)
        && s.token_ttl >= Duration::from_secs(1)
        && s.token_ttl <= 365 * DAY
        && s.limits.max_total <= 100 * 1024 * 1024
        && s.limits.max_each <= s.limits.max_total
}

/// The builder accepts exactly what the model accepts, with a typed error otherwise;
/// whatever it accepts sends a batch to the end (time runs on a manual clock and
/// tokio's paused timer, so an hour between messages costs nothing). Both sides must
/// come up often, or the property would say little.
#[test]
fn the_builder_accepts_what_the_model_does_and_that_sends() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
    let (accepted, refused) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    let result = runner.run(&settings(), |s| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let accepts = rt.block_on(async {
            let w = world(3).await;
            let built = OwnerAccess::builder(w.repo.clone(), w.transport.clone())
                .sender("Owner Portal <no-reply@portal.example.com>")
                .portal_url(PORTAL)
                .clock(w.clock.clone())
                .token_ttl(s.token_ttl)
                .attachment_limits(s.limits)
                .send_options(s.options.clone())
                .build();
            match (acceptable(&s), built) {
                (true, Ok(service)) => {
                    let selection = (0..3).map(|i| oid(&format!("e{i}"))).collect();
                    let invite = service.compose(&w.community, &selection).await.unwrap();
                    let review = service.review(&invite).await.unwrap();
                    let report = service.send(review).await.unwrap();
                    prop_assert_eq!(report.sent, 3, "{:?}", report);
                    prop_assert_eq!(w.transport.messages().len(), 3);
                    Ok(true)
                }
                (false, Err(Error::InvalidSetting(e))) => {
                    prop_assert!(!e.setting.is_empty() && !e.expected.is_empty(), "{:?}", e);
                    Ok(false)
                }
                (want, got) => Err(TestCaseError::fail(format!(
                    "the model says {want}, the builder gave {got:?}"
                ))),
            }
        })?;
        let side = if accepts { &accepted } else { &refused };
        side.set(side.get() + 1);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (accepted, refused) = (accepted.get(), refused.get());
    assert!(
        accepted >= 50 && refused >= 50,
        "{accepted} accepted, {refused} refused"
    );
}

/// Each refusal names its setting, so a caller can point at the field.
#[test]
fn each_refusal_names_the_setting() {
    let cases: Vec<(&str, SendOptions)> = vec![
        (
            "concurrency",
            SendOptions {
                concurrency: 0,
                ..SendOptions::default()
            },
        ),
        (
            "rate_per_second",
            SendOptions {
                rate_per_second: Some(1e-12),
                ..SendOptions::default()
            },
        ),
        (
            "retry.max_attempts",
            SendOptions {
                retry: RetryPolicy {
                    max_attempts: 0,
                    ..RetryPolicy::default()
                },
                ..SendOptions::default()
            },
        ),
        (
            "claim_lease",
            SendOptions {
                claim_lease: Duration::MAX,
                ..SendOptions::default()
            },
        ),
        (
            "outcome_group",
            SendOptions {
                outcome_group: 0,
                ..SendOptions::default()
            },
        ),
    ];
    for (setting, options) in cases {
        let err = options.validate().unwrap_err();
        assert_eq!(err.setting, setting, "{err}");
        assert!(err.to_string().contains(setting), "{err}");
    }
    assert_eq!(SendOptions::default().validate(), Ok(()));
    let ttl = OwnerAccess::builder(
        std::sync::Arc::new(InMemoryRepository::new()),
        std::sync::Arc::new(InMemoryTransport::new()),
    )
    .sender("a@example.org")
    .portal_url(PORTAL)
    .token_ttl(Duration::MAX)
    .build()
    .unwrap_err();
    assert!(
        matches!(&ttl, Error::InvalidSetting(e) if e.setting == "token_ttl"),
        "{ttl:?}"
    );
}
