// A `Release` cannot be conjured in any state outside tollgate: its constructor is private
// (a typed release comes from `Pipeline::start` or `Pipeline::restore` only).
use tollgate::prelude::*;

fn case(any: AnyRelease, fingerprint: tollgate::fact::Fingerprint) -> Release<Deployed, Delivery> {
    Release::<Deployed, Delivery>::new(any, None, fingerprint)
}

fn main() {}
