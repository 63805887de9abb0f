//! records-svc's database schema, as migrations. Every service's database also holds the audit outbox.

use caremesh_runtime::outbox::CreateAuditOutbox;
use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateAuditOutbox)]
    }
}
