//! The demo data loaded into an empty database: the host's side (communities and
//! owners), with the mix real data has.

use owner_access::domain::{Community, CommunityId, Owner, OwnerId, PropertyId};
use owner_access::prelude::*;
use owner_access::{Clock, SystemClock};

/// Loads two communities when the repository has none; gives back how many owners it
/// loaded (`None` when there was data already).
pub async fn load_if_empty(
    repo: &impl OwnerDirectory,
    owners: usize,
) -> Result<Option<usize>, Box<dyn std::error::Error>> {
    if !repo.communities().await?.is_empty() {
        return Ok(None);
    }
    let now = SystemClock.now();
    let maple = CommunityId::new("maple-grove")?;
    repo.upsert_community(
        &Community::new(maple.clone(), "Maple Grove HOA")
            .with_reply_to("board@maplegrove.example.org".parse()?),
    )
    .await?;
    repo.upsert_owners(&owners_of(&maple, "maple", owners), now)
        .await?;
    let oak = CommunityId::new("oak-ridge")?;
    repo.upsert_community(
        &Community::new(oak.clone(), "Oak Ridge Condominiums")
            .with_reply_to("office@oakridge.example.org".parse()?),
    )
    .await?;
    repo.upsert_owners(&owners_of(&oak, "oak", 24), now).await?;
    Ok(Some(owners + 24))
}

/// `count` owners: most with their own address; every twentieth without one, some
/// with an address that is not one, two sharing one, some registered already, and one
/// whose name is markup (it must show as text).
fn owners_of(community: &CommunityId, prefix: &str, count: usize) -> Vec<Owner> {
    let first = [
        "Ann", "Bruno", "Chiara", "Dmitri", "Eve", "Farah", "Gus", "Hana", "Ivo", "José",
    ];
    let last = [
        "Lee", "Okafor", "Rossi", "Ivanov", "Martin", "Nguyen", "Schmidt", "Kowalski",
    ];
    (0..count)
        .map(|i| {
            let id = OwnerId::new(format!("{prefix}-{i:04}")).expect("a valid id");
            let property = PropertyId::new(format!("unit-{}", 100 + i)).expect("a valid id");
            let (f, l) = (first[i % first.len()], last[(i / 3) % last.len()]);
            let (f, l) = if i == 1 {
                ("<script>alert(1)</script>", "Markup")
            } else {
                (f, l)
            };
            let owner = Owner::new(id, community.clone(), property, f, l)
                .with_property_address(format!("{} Grove Lane, Unit {}", 10 + i / 20, 100 + i));
            let email = format!(
                "{}.{}{i}@{prefix}.example.org",
                f.to_lowercase().replace('é', "e"),
                l.to_lowercase()
            );
            let email = if i == 1 {
                format!("markup{i}@{prefix}.example.org")
            } else {
                email
            };
            match i % 20 {
                0 | 7 => owner,
                3 => owner.with_primary_email(format!("{}.at.example.org", f.to_lowercase())),
                5 if i < 30 => {
                    owner.with_primary_email(format!("family.home@{prefix}.example.org"))
                }
                11 | 17 => owner.with_primary_email(email).with_registered(None),
                _ => owner.with_primary_email(email),
            }
        })
        .collect()
}
