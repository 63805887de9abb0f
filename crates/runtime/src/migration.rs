//! Building blocks for the services' schema migrations (sea-orm-migration), so that each
//! migration states only its tables and indexes.

use sea_orm_migration::prelude::*;

/// Creates, unless it exists, the index `name` on `columns` of `table` (`unique` for a unique one).
pub async fn create_index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: TableRef,
    columns: Vec<DynIden>,
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.if_not_exists().name(name).table(table);
    for column in columns {
        index.col(column);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}

/// Drops `tables` that exist, in order (name dependents first).
pub async fn drop_tables(manager: &SchemaManager<'_>, tables: impl IntoIterator<Item = TableRef>) -> Result<(), DbErr> {
    for table in tables {
        manager
            .drop_table(Table::drop().table(table).if_exists().to_owned())
            .await?;
    }
    Ok(())
}

/// Adds `columns` to `table`, one statement each (SQLite alters one thing at a time).
pub async fn add_columns(
    manager: &SchemaManager<'_>,
    table: TableRef,
    columns: impl IntoIterator<Item = ColumnDef>,
) -> Result<(), DbErr> {
    for mut column in columns {
        manager
            .alter_table(Table::alter().table(table.clone()).add_column(&mut column).to_owned())
            .await?;
    }
    Ok(())
}

/// Drops `columns` from `table`, one statement each.
pub async fn drop_columns(
    manager: &SchemaManager<'_>,
    table: TableRef,
    columns: impl IntoIterator<Item = DynIden>,
) -> Result<(), DbErr> {
    for column in columns {
        manager
            .alter_table(Table::alter().table(table.clone()).drop_column(column).to_owned())
            .await?;
    }
    Ok(())
}
