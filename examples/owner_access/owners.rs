//! The host's data and the Manage screen: `import`, `roster`, `mass-edit`, and the
//! community's `activity` feed.

use std::collections::HashMap;
use std::path::Path;

use owner_access::domain::{CommunityId, Page};
use owner_access::eligibility::{AccessFilter, EmailFilter, OwnerFilter};
use owner_access::{Clock, Error, SystemClock};

use crate::app::App;
use crate::args::{AccessArg, EmailArg, MessageArgs};
use crate::failure::{Failure, id};
use crate::{input, output};

/// Owners handed to the store at once during an import: a few MB, so the import's
/// memory does not grow with the file.
const IMPORT_CHUNK: usize = 4096;

impl App {
    /// `import`: communities and owners from CSV files in one transaction: a bad row
    /// or a store failure anywhere keeps nothing (exit 1).
    pub async fn import(
        &self,
        communities: Option<&Path>,
        owners: Option<&Path>,
    ) -> Result<u8, Failure> {
        if communities.is_none() && owners.is_none() {
            return Err(Failure::input(
                "import needs --communities FILE, --owners FILE, or both",
            ));
        }
        let communities = match communities {
            Some(path) => input::read_communities(path)?,
            None => Vec::new(),
        };
        // One transaction for the whole import, fed in chunks as the file is read: a
        // bad row or a store failure anywhere keeps nothing, and a million owners are
        // never in memory at once.
        let mut session = self
            .repo
            .begin_import(SystemClock.now())
            .await
            .map_err(Error::directory)?;
        session
            .upsert_communities(&communities)
            .await
            .map_err(Error::directory)?;
        let mut known: HashMap<CommunityId, bool> =
            communities.iter().map(|c| (c.id.clone(), true)).collect();
        let mut imported = 0usize;
        if let Some(path) = owners {
            let mut rows = input::OwnerRows::open(path)?;
            let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
            while let Some((line, owner)) = rows.next_owner()? {
                let exists = match known.get(&owner.community) {
                    Some(exists) => *exists,
                    None => {
                        let stored = self
                            .repo
                            .community(&owner.community)
                            .await
                            .map_err(Error::directory)?
                            .is_some();
                        known.insert(owner.community.clone(), stored);
                        stored
                    }
                };
                if !exists {
                    return Err(rows
                        .bad(
                            line,
                            format!(
                                "community `{}` is neither in the communities file nor stored",
                                owner.community
                            ),
                        )
                        .into());
                }
                chunk.push(owner);
                if chunk.len() == IMPORT_CHUNK {
                    session
                        .upsert_owners(&chunk)
                        .await
                        .map_err(Error::directory)?;
                    imported += chunk.len();
                    chunk.clear();
                }
            }
            session
                .upsert_owners(&chunk)
                .await
                .map_err(Error::directory)?;
            imported += chunk.len();
        }
        session.commit().await.map_err(Error::directory)?;
        println!(
            "imported {} communities and {imported} owners",
            communities.len(),
        );
        Ok(0)
    }

    /// `roster`: the Manage screen, the community's owners with their status and
    /// eligibility, filtered.
    pub async fn roster(
        &self,
        community: &str,
        access: AccessArg,
        email: EmailArg,
        search: Option<String>,
        json: bool,
    ) -> Result<u8, Failure> {
        let community: CommunityId = id("community", community)?;
        let filter = OwnerFilter {
            access: match access {
                AccessArg::All => AccessFilter::All,
                AccessArg::Unregistered => AccessFilter::Unregistered,
                AccessArg::Invited => AccessFilter::Invited,
                AccessArg::Registered => AccessFilter::Registered,
            },
            email: match email {
                EmailArg::Any => EmailFilter::Any,
                EmailArg::With => EmailFilter::WithEmail,
                EmailArg::Without => EmailFilter::WithoutEmail,
            },
            search,
        };
        let service = self.service_without_transport(&MessageArgs::defaults())?;
        let roster = service.roster(&community, &filter).await?;
        output::print_out(
            json,
            output::roster_json(&roster),
            output::roster_text(&roster),
        );
        Ok(0)
    }

    /// `mass-edit`: many primary emails at once, all or nothing (a bad row: exit 1,
    /// every bad row listed).
    pub async fn mass_edit(&self, path: &Path) -> Result<u8, Failure> {
        let edits = input::read_edits(path)?;
        if edits.is_empty() {
            return Err(Failure::input(format!("{}: no edits", path.display())));
        }
        // Owners of any communities, all or nothing for the whole file.
        let service = self.service_without_transport(&MessageArgs::defaults())?;
        let report = service.mass_edit_emails_across(&edits).await?;
        println!(
            "changed {} addresses ({} unchanged)",
            report.changed.len(),
            report.unchanged
        );
        Ok(0)
    }

    /// `activity`: the community's feed, newest first.
    pub async fn activity(&self, community: &str, limit: u32, json: bool) -> Result<u8, Failure> {
        let community: CommunityId = id("community", community)?;
        let service = self.service_without_transport(&MessageArgs::defaults())?;
        let entries = service
            .activity(&community, Page::first(limit as usize))
            .await?;
        output::print_out(
            json,
            output::activity_json(&entries),
            output::activity_text(&entries),
        );
        Ok(0)
    }
}
