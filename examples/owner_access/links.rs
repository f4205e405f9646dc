//! An owner's registration link: `verify` (read-only) and `redeem` (once). Every
//! failure of a link prints the same sentence, so nothing can be probed.

use crate::app::App;
use crate::args::MessageArgs;
use crate::failure::{Failure, token_failure};
use crate::output;

impl App {
    /// `verify`: prints the link's owner; uses nothing up.
    pub async fn verify(&self, token: &str) -> Result<u8, Failure> {
        let service = self.service_without_transport(&MessageArgs::defaults())?;
        let verified = service.verify(token).await.map_err(token_failure)?;
        println!("{}", output::shown(verified.owner.id.as_str()));
        Ok(0)
    }

    /// `redeem`: completes the owner's registration, once; prints the owner.
    pub async fn redeem(&self, token: &str) -> Result<u8, Failure> {
        let service = self.service_without_transport(&MessageArgs::defaults())?;
        let registration = service.redeem(token).await.map_err(token_failure)?;
        println!("{}", output::shown(registration.owner.id.as_str()));
        Ok(0)
    }
}
