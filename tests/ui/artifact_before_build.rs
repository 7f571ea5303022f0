// A fresh release has no artifact: the build move fixes it, so `artifact` exists only after.
use tollgate::prelude::*;

fn case(fresh: &Release<Commit, Deployment>) -> &ArtifactRef {
    fresh.artifact()
}

fn main() {}
