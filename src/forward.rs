//! The one macro that writes the forwarding impls of every host trait: a trait implemented by
//! `T` is implemented by `&T`, `Box<T>` and `Arc<T>`, for unsized `T` too (`Box<dyn Gate>`,
//! `Arc<dyn Observer>`), each method answered by the value pointed to.

/// Implements `$trait` for `&T`, `Box<T>` and `Arc<T>` (with `T: $trait + ?Sized`), every
/// listed method calling the same method on the value pointed to.
///
/// List every method of the trait, default methods included: a default left out would run
/// its default body on the pointer instead of the pointee's override (a `Gate::name` would
/// name the `Box`, not the gate). Attributes before `impl` go on each impl, which is where
/// `#[async_trait]` goes; methods written `async fn` are awaited.
///
/// ```text
/// forward_impls! {
///     #[async_trait]
///     impl Gate {
///         async fn evaluate(&self, ctx: &GateContext<'_>) -> Verdict;
///         fn name(&self) -> Cow<'_, str>;
///     }
/// }
/// ```
macro_rules! forward_impls {
    (
        $(#[$attr:meta])*
        impl $trait:ident { $($methods:tt)* }
    ) => {
        $crate::forward::forward_impls!(@munch [$(#[$attr])*] $trait [] $($methods)*);
    };
    // One method at a time, each rewritten into its forwarding body, so that the impls are
    // whole (and `#[async_trait]` sees plain `async fn`s) before they are emitted.
    (
        @munch $attrs:tt $trait:ident [$($done:tt)*]
        async fn $method:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) $(-> $ret:ty)?;
        $($rest:tt)*
    ) => {
        $crate::forward::forward_impls!(@munch $attrs $trait [$($done)*
            async fn $method(&self $(, $arg: $ty)*) $(-> $ret)? {
                (**self).$method($($arg),*).await
            }
        ] $($rest)*);
    };
    (
        @munch $attrs:tt $trait:ident [$($done:tt)*]
        fn $method:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) $(-> $ret:ty)?;
        $($rest:tt)*
    ) => {
        $crate::forward::forward_impls!(@munch $attrs $trait [$($done)*
            fn $method(&self $(, $arg: $ty)*) $(-> $ret)? {
                (**self).$method($($arg),*)
            }
        ] $($rest)*);
    };
    (@munch [$($attr:tt)*] $trait:ident [$($done:tt)*]) => {
        $($attr)*
        impl<T: $trait + ?Sized> $trait for &T {
            $($done)*
        }

        $($attr)*
        impl<T: $trait + ?Sized> $trait for ::std::boxed::Box<T> {
            $($done)*
        }

        $($attr)*
        impl<T: $trait + ?Sized> $trait for ::std::sync::Arc<T> {
            $($done)*
        }
    };
}

pub(crate) use forward_impls;
