//! The benchmark table of DESIGN.md and its entity.

use orm_core::Entity;

/// `customer(id serial primary key, name varchar(255), description varchar(255))`.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "customer")]
pub struct Customer {
    /// Assigned by the database's sequence.
    #[orm(primary_key, generated)]
    pub id: i32,
    /// A name, rewritten by the update workload.
    pub name: String,
    /// A description.
    pub description: Option<String>,
}

/// Creates the table (the ORM does not create tables).
pub const SCHEMA: &str =
    "CREATE TABLE customer (id serial PRIMARY KEY, name varchar(255) NOT NULL, description varchar(255))";

/// Row `i` of a workload's input; both sides build their input with it
/// (W1 and W2) before the clock starts.
pub fn new_customer(i: usize) -> Customer {
    Customer { id: 0, name: format!("customer {i}"), description: Some(format!("description of customer {i}")) }
}
