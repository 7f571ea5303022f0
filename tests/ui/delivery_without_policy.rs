// A delivery pipeline in which nobody may approve does not compile: `build` needs an
// approval policy first.
use tollgate::prelude::*;

fn case() {
    let _ = Pipeline::<Delivery>::builder("web").build();
}

fn main() {}
