// A `Release` cannot be conjured in any state outside tollgate: `from_any_unchecked` is private.
use tollgate::prelude::*;

fn case(any: AnyRelease) -> Release<Deployed, Delivery> {
    Release::<Deployed, Delivery>::from_any_unchecked(any)
}

fn main() {}
