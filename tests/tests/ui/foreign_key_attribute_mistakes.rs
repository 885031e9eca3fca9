use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Order {
    #[orm(primary_key)]
    region: String,
    #[orm(primary_key)]
    number: i64,
}

// A field that is not a column, one listed twice, one field only, and a
// `foreign_key` without its relation's name.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(foreign_key(fields(order_region, order_numbr), references = Order, relation = "order"))]
#[orm(foreign_key(fields(order_number, order_number), references = Order, relation = "again"))]
#[orm(foreign_key(fields(order_region), references = Order, relation = "alone"))]
#[orm(foreign_key(fields(order_region, order_number), references = Order))]
struct OrderLine {
    #[orm(primary_key)]
    id: i64,
    order_region: String,
    order_number: i64,
    #[orm(skip)]
    cached: i64,
}

fn main() {}
