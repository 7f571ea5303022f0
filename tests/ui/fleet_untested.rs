// A release that has not passed its tests cannot join a fleet, let alone be promoted.
use tollgate::fleet::{Actor, Fleet};
use tollgate::prelude::*;

async fn case(built: Release<Built, Delivery>, fleet: &Fleet<Delivery>) {
    let _ = fleet.promote(&built, "dev", Actor::automation("ci")).await;
}

fn main() {}
