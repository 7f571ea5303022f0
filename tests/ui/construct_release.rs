// A `Release` cannot be built with a struct literal outside tollgate: its fields are private.
use std::marker::PhantomData;

use tollgate::prelude::*;

fn case(any: AnyRelease) -> Release<Deployed, Delivery> {
    Release::<Deployed, Delivery> {
        any,
        cancel: Default::default(),
        _marker: PhantomData,
    }
}

fn main() {}
