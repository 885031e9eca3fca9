use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Order {
    #[orm(primary_key)]
    region: String,
    #[orm(primary_key)]
    number: i64,
}

// Three fields for a key of two columns.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(foreign_key(fields(order_region, order_number, line_no), references = Order, relation = "order"))]
struct OrderLine {
    #[orm(primary_key)]
    id: i64,
    order_region: String,
    order_number: i64,
    line_no: i32,
}

// The key's parts in the other order: (i64, String) for (String, i64).
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(foreign_key(fields(order_number, order_region), references = Order, relation = "order"))]
struct Shipment {
    #[orm(primary_key)]
    id: i64,
    order_region: String,
    order_number: i64,
}

fn main() {}
