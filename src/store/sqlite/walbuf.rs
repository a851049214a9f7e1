//! `portcullis-walbuf`: a pass-through SQLite VFS that gathers the WAL writes of a commit
//! into a few large `pwrite`s.
//!
//! SQLite writes each WAL frame with two `pwrite` calls (its 24-byte header, then the
//! page), and a 4 120-byte frame straddles page-cache pages, so a commit of ~100 frames
//! was ~200 system calls and ~300 page-cache write steps: ~12% of the server's CPU per
//! chat run (docs/PERFORMANCE.md, item 6). This VFS wraps the default one (`unix`) and,
//! for WAL files only, keeps consecutive writes in a buffer and writes them out together
//! before anything that could observe the file: `xSync` (so every commit's frames are
//! written, then fsynced, before the commit returns), `xRead`, `xTruncate`, `xFileSize`,
//! `xFileControl`, `xClose`, a write that does not continue the buffer, and a buffer of
//! [`FLUSH_AT`] bytes (in pieces of at most [`MAX_WRITE`]). The bytes, their offsets and
//! the fsyncs are exactly what SQLite asked for; only the number of calls changes. Other connections read only frames a
//! commit has made visible, which happens after its `xSync`. Every other file (the
//! database, the shared-memory index) is forwarded untouched.
//!
//! Only the group-commit writer's connection opens files through it (`conn.rs`).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections pass to `sqlite3_open_v2` to use this VFS.
pub(crate) const NAME: &CStr = c"portcullis-walbuf";
/// A buffer this large is written at once, even before the commit's sync.
const FLUSH_AT: usize = 4 << 20;
/// The most bytes handed to the wrapped `xWrite` in one call: the unix VFS masks a write's
/// length to 17 bits (`seekAndWriteFd`: `nBuf &= 0x1ffff`) and reports a longer one as a
/// full disk, so the buffer goes out in pieces of 124 KiB.
const MAX_WRITE: usize = 124 << 10;

/// Our file object. SQLite allocates `szOsFile` bytes for it; the wrapped VFS's own file
/// object (of its `szOsFile` bytes) starts at `real` and runs to the end.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    /// The pending WAL writes; null for every file that is not a WAL.
    buf: *mut Pending,
    real: ffi::sqlite3_file,
}

/// Consecutive bytes not yet written, starting at file offset `start`.
struct Pending {
    start: i64,
    data: Vec<u8>,
}

/// The wrapped VFS (the process default when this one was registered).
struct Real(*mut ffi::sqlite3_vfs);
// SAFETY: a registered VFS is immutable and lives as long as the process; SQLite's
// functions on it are thread-safe.
unsafe impl Send for Real {}
unsafe impl Sync for Real {}

static REAL: OnceLock<Result<Real, String>> = OnceLock::new();

/// Registers the VFS once per process (not as the default). Errors say why SQLite
/// refused.
pub(crate) fn register() -> Result<(), String> {
    REAL.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find initializes SQLite if needed and returns a pointer to
        // a registered VFS (or null), valid for the life of the process.
        let real = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
        if real.is_null() {
            return Err("SQLite has no default VFS".into());
        }
        // SAFETY: `real` is a valid VFS; copying it keeps every method and its pAppData,
        // so the copied methods work when SQLite passes them our VFS pointer.
        let mut ours: ffi::sqlite3_vfs = unsafe { ptr::read(real) };
        let offset = std::mem::offset_of!(File, real) as c_int;
        ours.szOsFile += offset;
        ours.zName = NAME.as_ptr();
        ours.pNext = ptr::null_mut();
        ours.xOpen = Some(x_open);
        // Leaked on purpose: SQLite keeps the pointer for the life of the process.
        let ours = Box::into_raw(Box::new(ours));
        // SAFETY: `ours` is a complete, valid VFS that is never freed.
        let rc = unsafe { ffi::sqlite3_vfs_register(ours, 0) };
        if rc != ffi::SQLITE_OK {
            return Err(format!("sqlite3_vfs_register failed ({rc})"));
        }
        Ok(Real(real))
    })
    .as_ref()
    .map(|_| ())
    .map_err(Clone::clone)
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Ok(Real(real))) = REAL.get() else {
        return ffi::SQLITE_ERROR;
    };
    let f = file.cast::<File>();
    // SAFETY: SQLite hands us `szOsFile` writable bytes at `file`, enough for `File`
    // followed by the wrapped VFS's object; `real` is the wrapped VFS.
    unsafe {
        (*f).base.pMethods = ptr::null();
        (*f).buf = ptr::null_mut();
        (*f).real.pMethods = ptr::null();
        let Some(open) = (**real).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        let rc = open(*real, name, &raw mut (*f).real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // A failed open that left methods behind still wants its close.
            if let Some(close) = methods(f).and_then(|m| m.xClose) {
                close(&raw mut (*f).real);
            }
            return rc;
        }
        let Some(m) = methods(f) else {
            return ffi::SQLITE_ERROR;
        };
        (*f).base.pMethods = match m.iVersion {
            v if v >= 3 => &METHODS_V3,
            2 => &METHODS_V2,
            _ => &METHODS_V1,
        };
        if flags & ffi::SQLITE_OPEN_WAL != 0 {
            (*f).buf = Box::into_raw(Box::new(Pending {
                start: 0,
                data: Vec::new(),
            }));
        }
    }
    ffi::SQLITE_OK
}

/// The wrapped file's methods (None before a successful open).
///
/// # Safety
/// `f` points to a `File` this VFS opened (or is opening).
unsafe fn methods<'a>(f: *mut File) -> Option<&'a ffi::sqlite3_io_methods> {
    // SAFETY: per the caller's contract; the methods table is static in SQLite.
    unsafe { (*f).real.pMethods.as_ref() }
}

/// Our `File` and its wrapped file object.
///
/// # Safety
/// `file` was opened by [`x_open`].
unsafe fn parts(file: *mut ffi::sqlite3_file) -> (*mut File, *mut ffi::sqlite3_file) {
    let f = file.cast::<File>();
    // SAFETY: per the caller's contract.
    (f, unsafe { &raw mut (*f).real })
}

/// Writes the pending bytes, if any, in as few calls as the wrapped VFS takes.
///
/// # Safety
/// `file` was opened by [`x_open`].
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the caller's contract; SQLite uses a file from one thread at a time.
    unsafe {
        let (f, real) = parts(file);
        let Some(pending) = (*f).buf.as_mut() else {
            return ffi::SQLITE_OK;
        };
        if pending.data.is_empty() {
            return ffi::SQLITE_OK;
        }
        let Some(write) = methods(f).and_then(|m| m.xWrite) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let mut rc = ffi::SQLITE_OK;
        let mut at = pending.start;
        for piece in pending.data.chunks(MAX_WRITE) {
            // MAX_WRITE fits in a c_int.
            rc = write(real, piece.as_ptr().cast(), piece.len() as c_int, at);
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += piece.len() as i64;
        }
        pending.data.clear();
        rc
    }
}

/// Flushes, then calls the wrapped method, or returns the flush's error. Used inside
/// `unsafe` blocks of methods SQLite calls on files opened by [`x_open`].
macro_rules! flushed {
    ($file:expr, $method:ident, $missing:expr, $($arg:expr),*) => {{
        let rc = flush($file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        forward!($file, $method, $missing $(, $arg)*)
    }};
}

/// Calls the wrapped method as is. Used like [`flushed`].
macro_rules! forward {
    ($file:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        let (f, real) = parts($file);
        match methods(f).and_then(|m| m.$method) {
            Some(call) => call(real $(, $arg)*),
            None => $missing,
        }
    }};
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls xClose once, on a file opened by x_open.
    unsafe {
        let flushed = flush(file);
        let (f, real) = parts(file);
        if !(*f).buf.is_null() {
            drop(Box::from_raw((*f).buf));
            (*f).buf = ptr::null_mut();
        }
        let closed = match methods(f).and_then(|m| m.xClose) {
            Some(close) => close(real),
            None => ffi::SQLITE_OK,
        };
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    out: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { flushed!(file, xRead, ffi::SQLITE_IOERR_READ, out, amount, offset) }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls xWrite on a file opened by x_open, with `amount` readable
    // bytes at `data`.
    unsafe {
        let (f, _) = parts(file);
        let Some(pending) = (*f).buf.as_mut() else {
            return forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, data, amount, offset);
        };
        let Ok(len) = usize::try_from(amount) else {
            return forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, data, amount, offset);
        };
        let continues = pending.start + pending.data.len() as i64 == offset;
        if !pending.data.is_empty() && !continues {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let pending = &mut *(*f).buf;
        if pending.data.is_empty() {
            pending.start = offset;
        }
        pending
            .data
            .extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), len));
        if pending.data.len() >= FLUSH_AT {
            return flush(file);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { flushed!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size) }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { flushed!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags) }
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { flushed!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, size) }
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { forward!(file, xLock, ffi::SQLITE_IOERR_LOCK, level) }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { forward!(file, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level) }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe {
        forward!(
            file,
            xCheckReservedLock,
            ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
            out
        )
    }
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { flushed!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg) }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { forward!(file, xSectorSize, 4096) }
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { forward!(file, xDeviceCharacteristics, 0) }
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe {
        forward!(
            file,
            xShmMap,
            ffi::SQLITE_IOERR_SHMMAP,
            page,
            size,
            extend,
            out
        )
    }
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags) }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { forward!(file, xShmBarrier, ()) }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { forward!(file, xShmUnmap, ffi::SQLITE_OK, delete) }
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe {
        flushed!(
            file,
            xFetch,
            {
                // No memory map: SQLite falls back to xRead.
                *out = ptr::null_mut();
                ffi::SQLITE_OK
            },
            offset,
            amount,
            out
        )
    }
}

unsafe extern "C" fn x_unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this only on a file opened by x_open.
    unsafe { forward!(file, xUnfetch, ffi::SQLITE_OK, offset, page) }
}

/// The method table for a wrapped file of method version `v` (SQLite calls the
/// shared-memory methods only from version 2, the fetch methods only from 3).
const fn table(v: c_int) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: v,
        xClose: Some(x_close),
        xRead: Some(x_read),
        xWrite: Some(x_write),
        xTruncate: Some(x_truncate),
        xSync: Some(x_sync),
        xFileSize: Some(x_file_size),
        xLock: Some(x_lock),
        xUnlock: Some(x_unlock),
        xCheckReservedLock: Some(x_check_reserved_lock),
        xFileControl: Some(x_file_control),
        xSectorSize: Some(x_sector_size),
        xDeviceCharacteristics: Some(x_device_characteristics),
        xShmMap: Some(x_shm_map),
        xShmLock: Some(x_shm_lock),
        xShmBarrier: Some(x_shm_barrier),
        xShmUnmap: Some(x_shm_unmap),
        xFetch: Some(x_fetch),
        xUnfetch: Some(x_unfetch),
    }
}

static METHODS_V1: ffi::sqlite3_io_methods = table(1);
static METHODS_V2: ffi::sqlite3_io_methods = table(2);
static METHODS_V3: ffi::sqlite3_io_methods = table(3);
