use orm_core::Entity;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Customer {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
    balance: f64,
}

// Comparisons are typed exactly: each of these has a conversion in std
// (`From<bool> for i64`, `From<u8> for i64`, `From<f32> for f64`) or none
// at all, and none of them compiles.
fn main() {
    let _ = Customer::ID.eq("text");
    let _ = Customer::ID.eq(true);
    let _ = Customer::ID.gt(1u8);
    let _ = Customer::BALANCE.lt(1.5f32);
    let id: i64 = 7;
    let _ = Customer::NAME.eq(id);
}
