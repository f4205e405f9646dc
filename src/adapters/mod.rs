//! Reference adapters for the two ports.
//!
//! | Adapter | Port | Use |
//! |---|---|---|
//! | [`InMemoryRepository`](memory::InMemoryRepository) | [`OwnerRepository`](crate::OwnerRepository) | demos, small deployments, tests |
//! | [`InMemoryTransport`](memory::InMemoryTransport) | [`MailTransport`](crate::MailTransport) | tests: records messages, injects faults |
//! | [`FileOutbox`](outbox::FileOutbox) | [`MailTransport`](crate::MailTransport) | one `.eml` file per message |
//! | `SqliteRepository` (`sqlite::SqliteRepository`, feature `sqlite`) | [`OwnerRepository`](crate::OwnerRepository) | a durable store in one SQLite file |
//! | `SmtpTransport` (`smtp::SmtpTransport`, feature `smtp`) | [`MailTransport`](crate::MailTransport) | delivery through an SMTP server |

pub mod memory;
pub mod outbox;
#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub mod smtp;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
