//! The Send Message page prefilled, and drafts: saved, loaded, listed, discarded.

use crate::domain::{ActivityEntry, ActivityKind, CommunityId, Draft, DraftId};
use crate::error::{Error, Result};
use crate::invite::Invite;
use crate::selection::Selection;
use crate::template::{DEFAULT_HTML, DEFAULT_SUBJECT, DEFAULT_TEXT};

use super::OwnerAccess;

impl OwnerAccess {
    /// The Send Message page, prefilled: the default subject and bodies, Reply-To the
    /// community's, From and portal URL the service's, for the selected owners.
    ///
    /// # Errors
    /// - [`Error::NotFound`]: the community does not exist in the directory.
    /// - [`Error::Repository`] with `Side::Directory`: reading the community failed.
    ///
    /// Nothing is stored either way.
    pub async fn compose(&self, community: &CommunityId, selection: &Selection) -> Result<Invite> {
        let community = self.community(community).await?;
        Ok(Invite {
            community: community.id,
            selection: selection.clone(),
            subject: DEFAULT_SUBJECT.to_owned(),
            text_body: Some(DEFAULT_TEXT.to_owned()),
            html_body: Some(DEFAULT_HTML.to_owned()),
            reply_to: community.reply_to.map(String::from),
            summary_to: None,
            attachments: Vec::new(),
            draft: None,
            from: Some(self.settings.sender.to_string()),
            portal_url: Some(self.settings.portal_url.clone()),
        })
    }

    /// Saves an invite as a draft (new, or updating the draft it came from) and notes
    /// it in the activity feed. Returns the draft id; the invite is stored as written,
    /// attachments included. Problems are not checked here: a draft may be unfinished.
    ///
    /// # Errors
    /// - [`Error::NotFound`]: the invite's community does not exist; nothing is stored.
    /// - [`Error::Repository`] with `Side::Directory`: reading the community failed;
    ///   nothing is stored.
    /// - [`Error::Repository`] with `Side::Store`: reading the draft it came from or
    ///   storing it failed, and nothing is stored.
    ///
    /// Once the draft is stored the call answers with its id: when appending the
    /// activity entry fails after that, the feed misses the entry and a `warn` event
    /// says so (an `Err` would lose the id of a new draft, and saving again would
    /// store a second one).
    pub async fn save_draft(&self, invite: &Invite) -> Result<DraftId> {
        self.community(&invite.community).await?;
        let now = self.clock.now();
        let existing = match &invite.draft {
            Some(id) => self.store.draft(id).await.map_err(Error::store)?,
            None => None,
        };
        let id = existing
            .as_ref()
            .map(|d| d.id.clone())
            .unwrap_or_else(DraftId::generate);
        let mut stored = invite.clone();
        stored.draft = Some(id.clone());
        let draft = Draft {
            id: id.clone(),
            invite: stored,
            created_at: existing.map_or(now, |d| d.created_at),
            updated_at: now,
        };
        self.store.save_draft(&draft).await.map_err(Error::store)?;
        // The draft is saved: its id is the answer. A failed activity entry is logged,
        // not returned, since an `Err` would lose the id and saving the invite again
        // would store a second draft.
        let entry = ActivityEntry {
            community: invite.community.clone(),
            at: now,
            kind: ActivityKind::DraftSaved {
                draft: id.clone(),
                selected: invite.selection.len(),
            },
        };
        if let Err(error) = self.store.append_activity(&entry).await {
            tracing::warn!(
                draft = %id,
                error = %crate::error::with_causes(&error),
                "draft saved, but its activity entry could not be appended"
            );
        }
        Ok(id)
    }

    /// A saved draft's invite, to edit, review and send.
    ///
    /// # Errors
    /// - [`Error::NotFound`]: no draft has this id (never saved, or discarded).
    /// - [`Error::Repository`] with `Side::Store`: reading it failed.
    pub async fn load_draft(&self, id: &DraftId) -> Result<Invite> {
        Ok(self.draft(id).await?.invite)
    }

    async fn draft(&self, id: &DraftId) -> Result<Draft> {
        self.store
            .draft(id)
            .await
            .map_err(Error::store)?
            .ok_or_else(|| Error::NotFound {
                what: "draft",
                id: id.to_string(),
            })
    }

    /// A community's drafts, newest first.
    ///
    /// # Errors
    /// - [`Error::Repository`] with `Side::Store`: reading them failed. A community
    ///   that does not exist has no drafts (an empty list, not an error).
    pub async fn drafts(&self, community: &CommunityId) -> Result<Vec<Draft>> {
        self.store.drafts(community).await.map_err(Error::store)
    }

    /// Discards a draft and notes it in the activity feed.
    ///
    /// # Errors
    /// - [`Error::NotFound`]: no draft has this id; nothing changes.
    /// - [`Error::Repository`] with `Side::Store`: reading or deleting the draft
    ///   failed, and it is kept; or it was deleted and appending the activity entry
    ///   failed: the draft is gone and the feed misses that entry.
    pub async fn discard_draft(&self, id: &DraftId) -> Result<()> {
        let draft = self.draft(id).await?;
        self.store.delete_draft(id).await.map_err(Error::store)?;
        self.store
            .append_activity(&ActivityEntry {
                community: draft.invite.community,
                at: self.clock.now(),
                kind: ActivityKind::DraftDiscarded { draft: id.clone() },
            })
            .await
            .map_err(Error::store)?;
        Ok(())
    }
}
