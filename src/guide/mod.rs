//! A guide for students and tool authors: what CI, continuous delivery and continuous
//! deployment are, the words this crate uses, how to write executors, gates and a release
//! bot, and how GitHub Actions, Tekton, Octopus Deploy and Flux setups map onto tollgate.
//!
//! Each chapter is a module with documentation only; every Rust block in it is a doctest.
//!
//! 1. [`practices`]: CI vs continuous delivery vs continuous deployment, both pipelines
//!    drawn, the button in code.
//! 2. [`glossary`]: release, state, move, step, stage (three "stage" words told apart),
//!    gate, approval, mode, parked, executor, artifact, environment, journal, event.
//! 3. [`executors`]: writing an executor.
//! 4. [`gates`]: writing a gate.
//! 5. [`release_bot`]: building a release bot on events, the journal, votes and restore.
//! 6. [`github_actions`], [`tekton`], [`octopus`], [`flux`]: modelling those systems, with
//!    what maps today and what is still coming.

#[doc = include_str!("../../docs/guide/practices.md")]
pub mod practices {}

#[doc = include_str!("../../docs/guide/glossary.md")]
pub mod glossary {}

#[doc = include_str!("../../docs/guide/executors.md")]
pub mod executors {}

#[doc = include_str!("../../docs/guide/gates.md")]
pub mod gates {}

#[doc = include_str!("../../docs/guide/release_bot.md")]
pub mod release_bot {}

#[doc = include_str!("../../docs/guide/github_actions.md")]
pub mod github_actions {}

#[doc = include_str!("../../docs/guide/tekton.md")]
pub mod tekton {}

#[doc = include_str!("../../docs/guide/octopus.md")]
pub mod octopus {}

#[doc = include_str!("../../docs/guide/flux.md")]
pub mod flux {}
