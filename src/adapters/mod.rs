//! Reference adapters for the two ports.
//!
//! | Adapter | Port | Use |
//! |---|---|---|
//! | [`InMemoryRepository`](memory::InMemoryRepository) | [`OwnerRepository`](crate::OwnerRepository) | demos, small deployments, tests |
//! | [`InMemoryTransport`](memory::InMemoryTransport) | [`MailTransport`](crate::MailTransport) | tests: records messages, injects faults |
//! | [`FileOutbox`](outbox::FileOutbox) | [`MailTransport`](crate::MailTransport) | one `.eml` file per message |
//! | `SqliteRepository` (`sqlite::SqliteRepository`, feature `sqlite`) | [`OwnerRepository`](crate::OwnerRepository), [`InvitationStore`](crate::InvitationStore) | both ports, durable, in one SQLite file |
//! | `SqliteDirectory`, `SqliteStore` (`sqlite::…`, feature `sqlite`) | [`OwnerRepository`](crate::OwnerRepository); [`InvitationStore`](crate::InvitationStore) | one part each, in tables of its own, in a file that may hold the other and a host's tables |
//! | `PostgresRepository` (`postgres::PostgresRepository`, feature `postgres`) | [`OwnerRepository`](crate::OwnerRepository), [`InvitationStore`](crate::InvitationStore) | both ports in a PostgreSQL server, shared by many processes |
//! | `PostgresDirectory`, `PostgresStore` (`postgres::…`, feature `postgres`) | [`OwnerRepository`](crate::OwnerRepository); [`InvitationStore`](crate::InvitationStore) | one part each, in tables of its own, beside a host's tables |
//! | `SmtpTransport` (`smtp::SmtpTransport`, feature `smtp`) | [`MailTransport`](crate::MailTransport) | delivery through an SMTP server |

pub mod memory;
pub mod outbox;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub mod smtp;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql_columns;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
