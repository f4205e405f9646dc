//! Review + render + MIME + token for 10,000 recipients, through the full send path
//! (in-memory repository, claims, outcomes) into a transport that drops the bytes;
//! with and without a 200 KB attachment.
//!
//! ```sh
//! cargo bench --bench render
//! ```

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use owner_access::domain::{Community, CommunityId, Owner, OwnerId, PropertyId};
use owner_access::invite::Attachment;
use owner_access::prelude::*;
use owner_access::transport::{Accepted, Envelope, MailTransport, TransportError};
use owner_access::{InMemoryRepository, OwnerAccess, Selection, async_trait};

const RECIPIENTS: usize = 10_000;

/// Takes every message and drops it: what is measured is our side only.
struct DropTransport;

impl std::fmt::Display for DropTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("drop transport")
    }
}

#[async_trait]
impl MailTransport for DropTransport {
    async fn send(&self, _: &Envelope, message: &[u8]) -> Result<Accepted, TransportError> {
        std::hint::black_box(message);
        Ok(Accepted::default())
    }
}

async fn setup() -> (Arc<InMemoryRepository>, CommunityId) {
    let repo = Arc::new(InMemoryRepository::new());
    let community = CommunityId::new("bench").unwrap();
    repo.upsert_community(&Community::new(community.clone(), "Bench Towers HOA"))
        .await
        .unwrap();
    let owners: Vec<Owner> = (0..RECIPIENTS)
        .map(|i| {
            Owner::new(
                OwnerId::new(format!("o{i}")).unwrap(),
                community.clone(),
                PropertyId::new(format!("p{i}")).unwrap(),
                "Maximiliana",
                format!("Okafor-{i}"),
            )
            .with_property_address(format!("{i} Long Street, Springfield"))
            .with_primary_email(format!("owner{i}@example.org"))
        })
        .collect();
    repo.upsert_owners(
        &owners,
        owner_access::Clock::now(&owner_access::SystemClock),
    )
    .await
    .unwrap();
    (repo, community)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("send_10k");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(RECIPIENTS as u64));
    let attachment = Attachment::new(
        "Welcome Package.pdf",
        "application/pdf",
        (0..200 * 1024)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    for with_attachment in [false, true] {
        let label = if with_attachment {
            "200KB_attachment"
        } else {
            "no_attachment"
        };
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_batched(
                || rt.block_on(setup()),
                |(repo, community)| {
                    rt.block_on(async {
                        let service = OwnerAccess::builder(repo, Arc::new(DropTransport))
                            .sender("Owner Portal <no-reply@example.com>")
                            .portal_url("https://portal.example.com/register")
                            .build()
                            .unwrap();
                        let all: Selection = (0..RECIPIENTS)
                            .map(|i| OwnerId::new(format!("o{i}")).unwrap())
                            .collect();
                        let mut invite = service.compose(&community, &all).await.unwrap();
                        if with_attachment {
                            invite = invite.with_attachment(attachment.clone());
                        }
                        let review = service.review(&invite).await.unwrap();
                        let report = service.send(review).await.unwrap();
                        assert_eq!(report.sent, RECIPIENTS);
                    })
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
