//! The event loop's watch on this side's loop bell (`sharm_core::loop_bell`, Linux): a libuv poll
//! handle on the bell's fd, whose callback empties the FIFO and calls a JS function.
//!
//! Why not a `net.Socket` on the fd: each ring then went through the stream machinery (a read into
//! a fresh `Buffer`, `push`, a `'data'` event) before the channel looked at its rings; a sleeping
//! round trip paid that twice over what a socket's reader pays for its own data. Here a ring costs
//! one `read` of the bell and one call into JS.
//!
//! The handle is unreferenced (the channel's own `ref()`/`unref()` keeps the process alive, not
//! the bell). It closes when the [`LoopWatch`] is dropped, or when the
//! environment is torn down (a worker thread that ends without closing its channels): whichever
//! comes first; libuv frees it in its close callback. Everything here runs on the JS thread of
//! the environment that made it.

#[cfg(target_os = "linux")]
pub use linux::LoopWatch;

#[cfg(not(target_os = "linux"))]
pub struct LoopWatch;

#[cfg(not(target_os = "linux"))]
impl LoopWatch {
    /// There is no loop bell elsewhere (`take_loop_bell` returns `None`), so this is never called.
    pub fn start(_env: &napi::Env, fd: i32, _rung: napi::bindgen_prelude::Function<(), ()>) -> napi::Result<Self> {
        Err(napi::Error::from_reason(format!(
            "a loop bell exists only on Linux, got fd {fd} on another platform"
        )))
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::Cell;
    use std::ffi::{c_int, c_void};
    use std::ptr;
    use std::rc::Rc;

    use napi::bindgen_prelude::{Function, JsValue};
    use napi::sys;

    /// `UV_POLL` of `uv_handle_type`, `UV_READABLE` of `uv_poll_event` (libuv's stable ABI).
    const UV_POLL: c_int = 8;
    const UV_READABLE: c_int = 1;

    type PollCb = unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int);
    type CloseCb = unsafe extern "C" fn(handle: *mut c_void);

    // libuv, as exported by the `node` executable to its addons.
    extern "C" {
        fn uv_handle_size(kind: c_int) -> usize;
        fn uv_poll_init(event_loop: *mut sys::uv_loop_s, handle: *mut c_void, fd: c_int) -> c_int;
        fn uv_poll_start(handle: *mut c_void, events: c_int, cb: PollCb) -> c_int;
        fn uv_poll_stop(handle: *mut c_void) -> c_int;
        fn uv_close(handle: *mut c_void, cb: CloseCb);
        fn uv_unref(handle: *mut c_void);
        fn uv_handle_set_data(handle: *mut c_void, data: *mut c_void);
        fn uv_handle_get_data(handle: *const c_void) -> *mut c_void;
        fn uv_strerror(err: c_int) -> *const std::ffi::c_char;
    }

    /// What the handle's callbacks need; shared by the [`LoopWatch`] and the handle (its data).
    struct Watch {
        env: sys::napi_env,
        fd: c_int,
        /// The uv handle (`uv_handle_size(UV_POLL)` bytes), freed in the close callback.
        handle: *mut c_void,
        layout: std::alloc::Layout,
        rung: Cell<sys::napi_ref>,
        /// The async context the calls run in (made where the channel was opened).
        context: Cell<sys::napi_async_context>,
        cleanup: Cell<sys::napi_async_cleanup_hook_handle>,
        closed: Cell<bool>,
    }

    /// The running watch; see the module notes.
    pub struct LoopWatch {
        watch: Rc<Watch>,
    }

    fn uv_error(what: &str, code: c_int) -> napi::Error {
        // SAFETY: uv_strerror returns a static NUL-terminated string for any code.
        let text = unsafe { std::ffi::CStr::from_ptr(uv_strerror(code)) };
        napi::Error::from_reason(format!("{what} on the loop bell failed: {}", text.to_string_lossy()))
    }

    fn check(status: sys::napi_status, what: &str) -> napi::Result<()> {
        if status == sys::Status::napi_ok {
            Ok(())
        } else {
            Err(napi::Error::from_reason(format!("{what} failed with status {status}")))
        }
    }

    impl LoopWatch {
        /// Watches `fd` (owned from now on, closed with the watch) on `env`'s event loop and calls
        /// `rung` whenever it is readable, after emptying it.
        pub fn start(env: &napi::Env, fd: c_int, rung: Function<(), ()>) -> napi::Result<LoopWatch> {
            let env = env.raw();
            let mut event_loop = ptr::null_mut();
            let mut rung_ref = ptr::null_mut();
            let mut context = ptr::null_mut();
            // SAFETY: `env` is the live environment of this call; the out pointers are locals.
            unsafe {
                let mut resource = ptr::null_mut();
                let mut name = ptr::null_mut();
                const NAME: &str = "sharmipc.LoopBell";
                if let Err(e) = check(
                    sys::napi_get_uv_event_loop(env, &mut event_loop),
                    "napi_get_uv_event_loop",
                )
                .and_then(|()| check(sys::napi_create_object(env, &mut resource), "napi_create_object"))
                .and_then(|()| {
                    let status =
                        sys::napi_create_string_utf8(env, NAME.as_ptr().cast(), NAME.len() as isize, &mut name);
                    check(status, "napi_create_string_utf8")
                })
                .and_then(|()| {
                    check(
                        sys::napi_async_init(env, resource, name, &mut context),
                        "napi_async_init",
                    )
                })
                .and_then(|()| {
                    check(
                        sys::napi_create_reference(env, rung.raw(), 1, &mut rung_ref),
                        "napi_create_reference",
                    )
                }) {
                    if !context.is_null() {
                        sys::napi_async_destroy(env, context);
                    }
                    libc::close(fd);
                    return Err(e);
                }
            }
            // SAFETY: uv_handle_size only reads libuv's table of sizes.
            let size = unsafe { uv_handle_size(UV_POLL) };
            let layout = std::alloc::Layout::from_size_align(size, 16).expect("a handle's size is small");
            // SAFETY: `layout` has a non-zero size (a uv_poll_t is over 100 bytes).
            let handle = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<c_void>();
            if handle.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            let watch = Rc::new(Watch {
                env,
                fd,
                handle,
                layout,
                rung: Cell::new(rung_ref),
                context: Cell::new(context),
                cleanup: Cell::new(ptr::null_mut()),
                closed: Cell::new(false),
            });
            // SAFETY: `handle` is zeroed memory of the size libuv asked for, initialised here once
            // for this thread's loop; it is freed only in `on_close`, after uv_close.
            let r = unsafe { uv_poll_init(event_loop, handle, fd) };
            if r != 0 {
                // SAFETY: the handle was not initialised: nobody else knows it; the reference and
                // the fd are ours.
                unsafe {
                    std::alloc::dealloc(handle.cast(), layout);
                    sys::napi_delete_reference(env, rung_ref);
                    sys::napi_async_destroy(env, context);
                    libc::close(fd);
                }
                watch.closed.set(true);
                return Err(uv_error("uv_poll_init", r));
            }
            // The handle holds a count of the watch until its close callback.
            let data = Rc::into_raw(watch.clone()) as *mut c_void;
            let mut cleanup = ptr::null_mut();
            // SAFETY: the handle was initialised above; `data` stays valid until `on_close`
            // takes it back. The cleanup hook gets the same pointer, valid as long as the handle.
            unsafe {
                uv_handle_set_data(handle, data);
                uv_unref(handle);
                let r = uv_poll_start(handle, UV_READABLE, on_readable);
                if r != 0 {
                    close_watch(&watch);
                    return Err(uv_error("uv_poll_start", r));
                }
                if sys::napi_add_async_cleanup_hook(env, Some(on_teardown), data, &mut cleanup) == sys::Status::napi_ok
                {
                    watch.cleanup.set(cleanup);
                }
            }
            Ok(LoopWatch { watch })
        }
    }

    /// Stops watching and closes the fd.
    impl Drop for LoopWatch {
        fn drop(&mut self) {
            close_watch(&self.watch);
        }
    }

    /// Stops the handle and asks libuv to close it; [`on_close`] frees it. Once.
    fn close_watch(w: &Watch) {
        if w.closed.replace(true) {
            return;
        }
        let rung = w.rung.replace(ptr::null_mut());
        let context = w.context.replace(ptr::null_mut());
        // SAFETY: on the environment's thread; the handle is initialised and not closed yet (the
        // flag); the reference and the context were made on `env` and are given back once.
        unsafe {
            if !rung.is_null() {
                sys::napi_delete_reference(w.env, rung);
            }
            if !context.is_null() {
                sys::napi_async_destroy(w.env, context);
            }
            uv_poll_stop(w.handle);
            uv_close(w.handle, on_close);
        }
    }

    /// The handle closed: free it, close the fd, drop the handle's count of the watch.
    unsafe extern "C" fn on_close(handle: *mut c_void) {
        // SAFETY: the data is the `Rc` count that `start` gave the handle, taken back once here.
        let watch = unsafe { Rc::from_raw(uv_handle_get_data(handle) as *const Watch) };
        // SAFETY: libuv is done with the handle; the fd is the watch's own.
        unsafe {
            std::alloc::dealloc(handle.cast(), watch.layout);
            libc::close(watch.fd);
            let cleanup = watch.cleanup.replace(ptr::null_mut());
            if !cleanup.is_null() {
                sys::napi_remove_async_cleanup_hook(cleanup);
            }
        }
    }

    /// The environment is going away with the watch still open.
    unsafe extern "C" fn on_teardown(_hook: sys::napi_async_cleanup_hook_handle, data: *mut c_void) {
        // SAFETY: `data` is the handle's count, alive until `on_close` (which removes this hook).
        let watch = unsafe { &*(data as *const Watch) };
        close_watch(watch);
    }

    /// The bell was rung: empty it, then call `rung` as a callback from the event loop, in the
    /// async context of the channel's opening (its microtasks and `nextTick`s run after it, as
    /// after any I/O callback).
    unsafe extern "C" fn on_readable(handle: *mut c_void, _status: c_int, _events: c_int) {
        // SAFETY: the data is valid while the handle is (see `start`).
        let w = unsafe { &*(uv_handle_get_data(handle) as *const Watch) };
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a local buffer of its length from the non-blocking bell.
            let n = unsafe { libc::read(w.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < buf.len() as isize {
                break;
            }
        }
        let rung = w.rung.get();
        if w.closed.get() || rung.is_null() {
            return;
        }
        let env = w.env;
        // SAFETY: on the environment's thread, from its event loop, with no JS on the stack: a
        // handle scope around the call, as Node does for its own I/O callbacks.
        unsafe {
            let mut scope = ptr::null_mut();
            if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
                return;
            }
            let mut func = ptr::null_mut();
            let mut global = ptr::null_mut();
            let mut result = ptr::null_mut();
            if sys::napi_get_reference_value(env, rung, &mut func) == sys::Status::napi_ok
                && !func.is_null()
                && sys::napi_get_global(env, &mut global) == sys::Status::napi_ok
            {
                let status = sys::napi_make_callback(env, w.context.get(), global, func, 0, ptr::null(), &mut result);
                if status == sys::Status::napi_pending_exception {
                    // What a throwing I/O callback does: 'uncaughtException', or the process ends.
                    let mut err = ptr::null_mut();
                    if sys::napi_get_and_clear_last_exception(env, &mut err) == sys::Status::napi_ok {
                        sys::napi_fatal_exception(env, err);
                    }
                }
            }
            sys::napi_close_handle_scope(env, scope);
        }
    }
}
