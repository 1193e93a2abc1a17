/*
 * H5Zneural.c -- HDF5 filter plugin for neuralfilter (error-bounded neural compression).
 *
 * Thin by design: can_apply checks the datatype and chunk rank, set_local appends the value
 * size and chunk shape to cd_values (layout in H5Zneural.h and docs/filter.md), and the filter
 * function forwards each chunk to Python: pyneuralfilter.filter.encode_chunk(data, cd_values)
 * on write and decode_chunk(data, cd_values) on read.
 *
 * No link-time dependency on libhdf5 or libpython:
 *  - HDF5 functions (only can_apply / set_local and error reporting use them) are resolved at
 *    run time: from the global namespace (C hosts such as h5dump, h5repack, ParaView) or, for
 *    h5py whose bundled HDF5 is loaded RTLD_LOCAL, from the library behind the module handed
 *    to neuralfilter_h5py_class().  Each library gets its own H5Z_class2_t, so ids never cross
 *    libraries.  A successful read or write calls no HDF5 function.
 *  - Python: if an interpreter is running (h5py, pvpython) its symbols are used and the GIL is
 *    taken with PyGILState_Ensure; otherwise libpython is opened RTLD_GLOBAL (so numpy/torch
 *    extension modules resolve their symbols) and an interpreter is started with
 *    PyConfig.executable = the environment's python (NEURALFILTER_PYTHON overrides the path
 *    recorded at build time; NEURALFILTER_LIBPYTHON overrides the library).
 * Any failure: a message on stderr and on the HDF5 error stack, and the callback reports
 * failure (0 / -1).  Nothing is done at load time.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* types, PyConfig layout and prototypes only: nothing is linked */

#include <dlfcn.h>
#include <link.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "H5Zneural.h"

#ifndef NF_PYTHON_EXECUTABLE
#define NF_PYTHON_EXECUTABLE ""
#endif
#ifndef NF_LIBPYTHON
#define NF_LIBPYTHON ""
#endif

#define NF_EXPORT __attribute__((visibility("default")))

/* ---------------------------------------------------------------------------------------- */
/* The few HDF5 declarations needed (identical in HDF5 1.10 .. 2.0; no HDF5 header used).   */
/* ---------------------------------------------------------------------------------------- */
typedef int64_t hid_t;
typedef int herr_t;
typedef int htri_t;
typedef unsigned long long hsize_t;
typedef int H5Z_filter_t;

#define H5Z_FLAG_REVERSE 0x0100u
#define H5Z_CLASS_T_VERS 1
#define H5PL_TYPE_FILTER 0
#define H5E_DEFAULT_STACK ((hid_t)0)
#define H5T_FLOAT_CLASS 1
#define H5T_ORDER_LE_ 0
#define H5T_ORDER_BE_ 1

typedef htri_t (*H5Z_can_apply_func_t)(hid_t dcpl_id, hid_t type_id, hid_t space_id);
typedef herr_t (*H5Z_set_local_func_t)(hid_t dcpl_id, hid_t type_id, hid_t space_id);
typedef size_t (*H5Z_func_t)(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                             size_t nbytes, size_t *buf_size, void **buf);

typedef struct H5Z_class2_t {
    int version;
    H5Z_filter_t id;
    unsigned encoder_present;
    unsigned decoder_present;
    const char *name;
    H5Z_can_apply_func_t can_apply;
    H5Z_set_local_func_t set_local;
    H5Z_func_t filter;
} H5Z_class2_t;

/* One HDF5 library's entry points. */
typedef struct nf_h5api {
    int ok;
    herr_t (*H5open)(void);
    int (*H5Pget_chunk)(hid_t, int, hsize_t *);
    int (*H5Tget_class)(hid_t);
    size_t (*H5Tget_size)(hid_t);
    int (*H5Tget_order)(hid_t);
    herr_t (*H5Pget_filter_by_id2)(hid_t, H5Z_filter_t, unsigned *, size_t *, unsigned[], size_t,
                                   char[], unsigned *);
    herr_t (*H5Pmodify_filter)(hid_t, H5Z_filter_t, unsigned, size_t, const unsigned[]);
    herr_t (*H5Epush2)(hid_t, const char *, const char *, unsigned, hid_t, hid_t, hid_t,
                       const char *, ...);
    hid_t *err_cls, *maj_pline, *min_canapply, *min_setlocal, *min_callback;
} nf_h5api;

static nf_h5api api_host;  /* the HDF5 that loaded the plugin from HDF5_PLUGIN_PATH */
static nf_h5api api_h5py;  /* h5py's HDF5 (neuralfilter_h5py_class) */
static pthread_once_t api_host_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t nf_lock = PTHREAD_MUTEX_INITIALIZER;
static char nf_error[1024];

NF_EXPORT const char *neuralfilter_last_error(void) { return nf_error; }

static void nf_resolve(nf_h5api *a, void *h)
{
    memset(a, 0, sizeof *a);
    *(void **)&a->H5open = dlsym(h, "H5open");
    *(void **)&a->H5Pget_chunk = dlsym(h, "H5Pget_chunk");
    *(void **)&a->H5Tget_class = dlsym(h, "H5Tget_class");
    *(void **)&a->H5Tget_size = dlsym(h, "H5Tget_size");
    *(void **)&a->H5Tget_order = dlsym(h, "H5Tget_order");
    *(void **)&a->H5Pget_filter_by_id2 = dlsym(h, "H5Pget_filter_by_id2");
    *(void **)&a->H5Pmodify_filter = dlsym(h, "H5Pmodify_filter");
    *(void **)&a->H5Epush2 = dlsym(h, "H5Epush2");
    a->err_cls = (hid_t *)dlsym(h, "H5E_ERR_CLS_g");
    a->maj_pline = (hid_t *)dlsym(h, "H5E_PLINE_g");
    a->min_canapply = (hid_t *)dlsym(h, "H5E_CANAPPLY_g");
    a->min_setlocal = (hid_t *)dlsym(h, "H5E_SETLOCAL_g");
    a->min_callback = (hid_t *)dlsym(h, "H5E_CALLBACK_g");
    a->ok = a->H5Pget_chunk && a->H5Tget_class && a->H5Tget_size && a->H5Tget_order &&
            a->H5Pget_filter_by_id2 && a->H5Pmodify_filter;
}

static int nf_scan_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    const char *name = info->dlpi_name, *base;
    if (!name || !*name) return 0;
    base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (strncmp(base, "libhdf5", 7) != 0 || strstr(base, "_hl") || strstr(base, "_cpp") ||
        strstr(base, "fortran"))
        return 0;
    void *h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
    if (!h) return 0;
    nf_resolve((nf_h5api *)data, h);
    dlclose(h); /* drops only the reference RTLD_NOLOAD added */
    return ((nf_h5api *)data)->ok;
}

/* The host's HDF5: global symbols first (h5dump, h5repack, C programs, ParaView), else the
 * first loaded libhdf5* that exports the functions. */
static void nf_resolve_host(void)
{
    nf_resolve(&api_host, RTLD_DEFAULT);
    if (!api_host.ok) dl_iterate_phdr(nf_scan_cb, &api_host);
}

static void nf_h5error(const nf_h5api *a, hid_t *minor, const char *func, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "neuralfilter: %s\n", msg);
    fflush(stderr);
    if (a && a->H5Epush2 && a->err_cls && a->maj_pline && minor)
        a->H5Epush2(H5E_DEFAULT_STACK, __FILE__, func, __LINE__, *a->err_cls, *a->maj_pline, *minor,
                    "neuralfilter: %s", msg);
}

/* ---------------------------------------------------------------------------------------- */
/* can_apply / set_local                                                                    */
/* ---------------------------------------------------------------------------------------- */
static htri_t nf_can_apply_with(const nf_h5api *a, hid_t dcpl, hid_t type, hid_t space)
{
    (void)space;
    hsize_t dims[32];
    if (!a->ok) {
        nf_h5error(a, NULL, "can_apply",
                   "cannot find the HDF5 library's functions (H5Pget_chunk, H5Tget_class, ...) "
                   "in this process; from Python, import pyneuralfilter before using the filter");
        return -1;
    }
    int cls = a->H5Tget_class(type);
    size_t size = a->H5Tget_size(type);
    if (cls != H5T_FLOAT_CLASS) {
        static const char *names[] = {"integer", "float", "time", "string", "bitfield", "opaque",
                                      "compound", "reference", "enum", "variable-length",
                                      "array", "complex"};
        nf_h5error(a, a->min_canapply, "can_apply",
                   "unsupported datatype: only float32 and float64 data can be compressed, this "
                   "dataset's datatype is %s (HDF5 type class %d)",
                   (cls >= 0 && cls < 12) ? names[cls] : "unknown", cls);
        return -1;
    }
    if (size != 4 && size != 8) {
        nf_h5error(a, a->min_canapply, "can_apply",
                   "unsupported datatype: only 32- and 64-bit floats can be compressed, this "
                   "float type has %zu bytes per value", size);
        return -1;
    }
    int order = a->H5Tget_order(type);
    int native = (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) ? H5T_ORDER_LE_ : H5T_ORDER_BE_;
    if (order != native) {
        nf_h5error(a, a->min_canapply, "can_apply",
                   "unsupported datatype: the float type must have the machine's byte order "
                   "(%s-endian); store it as native float32/float64",
                   native == H5T_ORDER_LE_ ? "little" : "big");
        return -1;
    }
    int rank = a->H5Pget_chunk(dcpl, 32, dims);
    if (rank < 1 || rank > NF_MAX_RANK) {
        nf_h5error(a, a->min_canapply, "can_apply",
                   "unsupported chunk rank %d: chunks must have 1 to %d dimensions", rank,
                   NF_MAX_RANK);
        return -1;
    }
    return 1;
}

static int nf_get_cd(const nf_h5api *a, hid_t dcpl, unsigned *flags, size_t *n, unsigned cd[])
{
    unsigned cfg = 0;
    char name[64];
    *n = 32;
    return a->H5Pget_filter_by_id2(dcpl, H5Z_FILTER_NEURAL, flags, n, cd, sizeof name, name, &cfg);
}

static herr_t nf_set_local_with(const nf_h5api *a, hid_t dcpl, hid_t type, hid_t space)
{
    (void)space;
    unsigned cd[32], out[NF_CD_NMAX], flags = 0;
    size_t n = 0;
    hsize_t dims[32];
    if (!a->ok) {
        nf_h5error(a, NULL, "set_local", "cannot find the HDF5 library's functions");
        return -1;
    }
    if (nf_get_cd(a, dcpl, &flags, &n, cd) < 0) {
        nf_h5error(a, a->min_setlocal, "set_local", "cannot read the filter's cd_values");
        return -1;
    }
    memset(out, 0, sizeof out);
    if (n == 0 || (n >= NF_CD_NUSER && cd[NF_CD_MODE] == NF_MODE_DEFAULT)) {
        double rel = NF_DEFAULT_REL;
        uint64_t bits;
        memcpy(&bits, &rel, 8);
        out[NF_CD_VERSION] = NF_CD_LAYOUT_VERSION;
        out[NF_CD_MODE] = NF_MODE_REL;
        out[NF_CD_BOUND_LO] = (unsigned)(bits & 0xffffffffu);
        out[NF_CD_BOUND_HI] = (unsigned)(bits >> 32);
        if (n >= NF_CD_NUSER) {
            out[NF_CD_MODEL_HI] = cd[NF_CD_MODEL_HI];
            out[NF_CD_MODEL_LO] = cd[NF_CD_MODEL_LO];
        }
    } else if (n < NF_CD_NUSER) {
        nf_h5error(a, a->min_setlocal, "set_local",
                   "expected 0 or %d cd_values (version, mode, bound low word, bound high "
                   "word, model hash high, model hash low), got %zu", NF_CD_NUSER, n);
        return -1;
    } else {
        memcpy(out, cd, NF_CD_NUSER * sizeof(unsigned));
    }
    if (out[NF_CD_VERSION] != NF_CD_LAYOUT_VERSION) {
        nf_h5error(a, a->min_setlocal, "set_local",
                   "cd_values layout version %u is not supported (this plugin writes %u)",
                   out[NF_CD_VERSION], NF_CD_LAYOUT_VERSION);
        return -1;
    }
    if (out[NF_CD_MODE] != NF_MODE_ABS && out[NF_CD_MODE] != NF_MODE_REL) {
        nf_h5error(a, a->min_setlocal, "set_local",
                   "cd_values[1] = %u is not an error-bound mode (1 = abs, 2 = rel, 0 = default)",
                   out[NF_CD_MODE]);
        return -1;
    }
    {
        uint64_t bits = ((uint64_t)out[NF_CD_BOUND_HI] << 32) | out[NF_CD_BOUND_LO];
        double bound;
        memcpy(&bound, &bits, 8);
        if (!(bound > 0) || !isfinite(bound)) {
            nf_h5error(a, a->min_setlocal, "set_local",
                       "the error bound in cd_values[2..3] (%g) must be a positive finite number",
                       bound);
            return -1;
        }
    }
    int rank = a->H5Pget_chunk(dcpl, 32, dims);
    if (rank < 1 || rank > NF_MAX_RANK) {
        nf_h5error(a, a->min_setlocal, "set_local", "unsupported chunk rank %d (1 to %d)", rank,
                   NF_MAX_RANK);
        return -1;
    }
    out[NF_CD_ITEMSIZE] = (unsigned)a->H5Tget_size(type);
    out[NF_CD_RANK] = (unsigned)rank;
    for (int i = 0; i < rank; i++) {
        if (dims[i] > 0xffffffffull) {
            nf_h5error(a, a->min_setlocal, "set_local", "chunk dimension too large");
            return -1;
        }
        out[NF_CD_DIMS + i] = (unsigned)dims[i];
    }
    if (a->H5Pmodify_filter(dcpl, H5Z_FILTER_NEURAL, flags, (size_t)(NF_CD_DIMS + rank), out) < 0) {
        nf_h5error(a, a->min_setlocal, "set_local", "cannot store the cd_values");
        return -1;
    }
    return 0;
}

static void nf_host_once(void) { nf_resolve_host(); }
static htri_t nf_can_apply_host(hid_t d, hid_t t, hid_t s)
{
    pthread_once(&api_host_once, nf_host_once);
    return nf_can_apply_with(&api_host, d, t, s);
}
static herr_t nf_set_local_host(hid_t d, hid_t t, hid_t s)
{
    pthread_once(&api_host_once, nf_host_once);
    return nf_set_local_with(&api_host, d, t, s);
}
static htri_t nf_can_apply_h5py(hid_t d, hid_t t, hid_t s) { return nf_can_apply_with(&api_h5py, d, t, s); }
static herr_t nf_set_local_h5py(hid_t d, hid_t t, hid_t s) { return nf_set_local_with(&api_h5py, d, t, s); }

/* ---------------------------------------------------------------------------------------- */
/* Python                                                                                   */
/* ---------------------------------------------------------------------------------------- */
#define NF_PYFUNCS(X)                                                                            \
    X(Py_IsInitialized) X(PyGILState_Ensure) X(PyGILState_Release) X(PyEval_SaveThread)         \
    X(PyConfig_InitPythonConfig) X(PyConfig_SetBytesString) X(PyConfig_Clear)                    \
    X(Py_InitializeFromConfig) X(PyStatus_Exception) X(PyImport_ImportModule)                   \
    X(PyObject_GetAttrString) X(PyObject_CallFunctionObjArgs) X(PyBytes_FromStringAndSize)       \
    X(PyTuple_New) X(PyTuple_SetItem) X(PyLong_FromUnsignedLong)      \
    X(Py_DecRef) X(PyErr_Fetch) X(PyErr_NormalizeException) X(PyObject_Str) X(PyUnicode_AsUTF8) \
    X(PyErr_Clear) X(PySys_SetObject) X(PySys_GetObject) X(PyBool_FromLong)          \
    X(PyDict_GetItemString) X(PyObject_GetBuffer) X(PyBuffer_Release)                         \
    X(PyMemoryView_FromMemory) X(PyObject_CallMethod)

#define NF_DECL(f) static __typeof__(f) *p_##f;
NF_PYFUNCS(NF_DECL)

static int py_state = 0; /* 0 not tried, 1 ready, -1 failed (message in py_fail) */
static char py_fail[1024];
static PyObject *py_encode, *py_decode; /* owned, created under the GIL */

static int nf_bind_python(void *h)
{
#define NF_BIND(f)                                                                               \
    if (!(*(void **)&p_##f = dlsym(h, #f))) {                                                    \
        snprintf(py_fail, sizeof py_fail, "libpython lacks %s", #f);                             \
        return -1;                                                                               \
    }
    NF_PYFUNCS(NF_BIND)
    return 0;
}

static const char *nf_plugin_dir(char *buf, size_t n)
{
    Dl_info info;
    if (!dladdr((void *)nf_plugin_dir, &info) || !info.dli_fname) return NULL;
    snprintf(buf, n, "%s", info.dli_fname);
    char *s = strrchr(buf, '/');
    if (!s) return NULL;
    *s = 0;
    return buf;
}

/* The environment's python: NEURALFILTER_PYTHON, else the one recorded at build time, else
 * <prefix>/bin/python for a plugin installed at <prefix>/lib/pythonX.Y/site-packages/... */
static void nf_python_executable(char *out, size_t n)
{
    const char *env = getenv("NEURALFILTER_PYTHON");
    out[0] = 0;
    if (env && *env) { snprintf(out, n, "%s", env); return; }
    if (NF_PYTHON_EXECUTABLE[0] && access(NF_PYTHON_EXECUTABLE, X_OK) == 0) {
        snprintf(out, n, "%s", NF_PYTHON_EXECUTABLE);
        return;
    }
    char dir[2048];
    if (nf_plugin_dir(dir, sizeof dir)) {
        char *lib = strstr(dir, "/lib/python");
        if (lib) {
            *lib = 0;
            snprintf(out, n, "%s/bin/python", dir);
            if (access(out, X_OK) != 0) out[0] = 0;
        }
    }
}

static void nf_mark_c_host(void)
{
    PyObject *t = p_PyBool_FromLong(1);
    p_PySys_SetObject("_neuralfilter_c_host", t);
    p_Py_DecRef(t);
}

/* Called with nf_lock held. */
static void nf_start_python(void)
{
    void *h = NULL;
    int started_here = 0;
    __typeof__(Py_IsInitialized) *isinit = (__typeof__(Py_IsInitialized) *)dlsym(RTLD_DEFAULT, "Py_IsInitialized");
    if (isinit) {
        h = RTLD_DEFAULT; /* the host already has a libpython (h5py, pvpython, an embedding app) */
    } else {
        const char *lib = getenv("NEURALFILTER_LIBPYTHON");
        if (!lib || !*lib) lib = NF_LIBPYTHON;
        if (!*lib) {
            snprintf(py_fail, sizeof py_fail,
                     "no libpython recorded at build time (Python built without --enable-shared?)"
                     "; set NEURALFILTER_LIBPYTHON to a shared libpython3.so");
            py_state = -1;
            return;
        }
        h = dlopen(lib, RTLD_NOW | RTLD_GLOBAL);
        if (!h) {
            snprintf(py_fail, sizeof py_fail, "cannot load libpython %s: %s", lib, dlerror());
            py_state = -1;
            return;
        }
    }
    if (nf_bind_python(h) < 0) { py_state = -1; return; }
    if (!p_Py_IsInitialized()) {
        char exe[4096];
        PyConfig cfg;
        PyStatus st;
        nf_python_executable(exe, sizeof exe);
        p_PyConfig_InitPythonConfig(&cfg);
        cfg.install_signal_handlers = 0;
        cfg.parse_argv = 0;
        if (exe[0]) {
            st = p_PyConfig_SetBytesString(&cfg, &cfg.executable, exe);
            if (p_PyStatus_Exception(st)) {
                p_PyConfig_Clear(&cfg);
                snprintf(py_fail, sizeof py_fail, "cannot set PyConfig.executable to %s", exe);
                py_state = -1;
                return;
            }
        }
        st = p_Py_InitializeFromConfig(&cfg);
        p_PyConfig_Clear(&cfg);
        if (p_PyStatus_Exception(st)) {
            snprintf(py_fail, sizeof py_fail, "cannot start Python (executable %s): %s",
                     exe[0] ? exe : "(default)", st.err_msg ? st.err_msg : "unknown error");
            py_state = -1;
            return;
        }
        /* Tell pyneuralfilter it runs inside a C host: no h5py there. */
        nf_mark_c_host();
        started_here = 1;
    }
    if (started_here) p_PyEval_SaveThread(); /* release the GIL; callbacks use PyGILState */
    py_state = 1;
}

/* "TypeName: message" of the pending exception (GIL held); clears it. */
static void nf_fetch_error(char *out, size_t n)
{
    PyObject *t = NULL, *v = NULL, *tb = NULL;
    p_PyErr_Fetch(&t, &v, &tb);
    p_PyErr_NormalizeException(&t, &v, &tb);
    const char *tn = "exception", *vs = "";
    PyObject *name = t ? p_PyObject_GetAttrString(t, "__name__") : NULL;
    PyObject *sv = v ? p_PyObject_Str(v) : NULL;
    if (name) tn = p_PyUnicode_AsUTF8(name);
    if (sv) vs = p_PyUnicode_AsUTF8(sv);
    snprintf(out, n, "%s: %s", tn ? tn : "exception", vs ? vs : "");
    p_PyErr_Clear();
    if (name) p_Py_DecRef(name);
    if (sv) p_Py_DecRef(sv);
    if (t) p_Py_DecRef(t);
    if (v) p_Py_DecRef(v);
    if (tb) p_Py_DecRef(tb);
}

/* GIL held.  Import the callbacks once.  from_host: called by the HDF5 that loaded the plugin
 * from HDF5_PLUGIN_PATH; if h5py is not imported yet, this is a C host with its own Python
 * (pvpython): pyneuralfilter must then not import h5py, whose extension modules would bind to
 * the host's HDF5. */
static int nf_callbacks(int from_host, char *err, size_t n)
{
    if (py_encode && py_decode) return 0;
    if (from_host) {
        PyObject *mods = p_PySys_GetObject("modules"); /* borrowed */
        if (mods && !p_PyDict_GetItemString(mods, "h5py")) nf_mark_c_host();
    }
    PyObject *m = p_PyImport_ImportModule("pyneuralfilter.filter");
    if (!m) {
        char e[900];
        nf_fetch_error(e, sizeof e);
        snprintf(err, n, "cannot import pyneuralfilter.filter (%s); is the package installed in "
                 "the Python environment this plugin starts (NEURALFILTER_PYTHON)?", e);
        return -1;
    }
    PyObject *enc = p_PyObject_GetAttrString(m, "encode_chunk");
    PyObject *dec = p_PyObject_GetAttrString(m, "decode_chunk");
    p_Py_DecRef(m);
    if (!enc || !dec) {
        nf_fetch_error(err, n);
        if (enc) p_Py_DecRef(enc);
        if (dec) p_Py_DecRef(dec);
        return -1;
    }
    py_encode = enc;
    py_decode = dec;
    return 0;
}

/* Bytes of a decoded chunk from set_local's words (0: unknown) */
static size_t nf_decoded_size(size_t n, const unsigned cd[])
{
    if (n < NF_CD_DIMS) return 0;
    size_t size = cd[NF_CD_ITEMSIZE], rank = cd[NF_CD_RANK];
    if ((size != 4 && size != 8) || rank < 1 || rank > NF_MAX_RANK || n < NF_CD_DIMS + rank) return 0;
    for (size_t i = 0; i < rank; i++) {
        size_t d = cd[NF_CD_DIMS + i];
        if (d == 0 || size > SIZE_MAX / d) return 0;
        size *= d;
    }
    return size;
}

/* Let go of a memoryview over our memory; 1 when nothing in Python can reach the memory any
 * more (else the memory must never be freed: it is left to the process). */
static int nf_release_view(PyObject *view)
{
    PyObject *r = p_PyObject_CallMethod(view, "release", NULL);
    if (!r) {
        p_PyErr_Clear();
        return 0;
    }
    p_Py_DecRef(r);
    return 1;
}

static size_t nf_filter_with(const nf_h5api *a, int from_host, unsigned flags, size_t cd_nelmts,
                             const unsigned cd_values[], size_t nbytes, size_t *buf_size, void **buf)
{
    int reverse = (flags & H5Z_FLAG_REVERSE) != 0;
    const char *what = reverse ? "decompressing a chunk" : "compressing a chunk";
    char err[1200];
    size_t result = 0;
    err[0] = 0;

    pthread_mutex_lock(&nf_lock);
    if (py_state == 0) nf_start_python();
    int state = py_state;
    pthread_mutex_unlock(&nf_lock);
    if (state != 1) {
        nf_h5error(a, a->min_callback, "filter", "%s failed: %s", what, py_fail);
        return 0;
    }

    /* On read, Python decodes straight into the buffer HDF5 gets back (no copy) when the
     * chunk size is known: a writable memoryview over it is the callback's third argument. */
    size_t decoded = reverse ? nf_decoded_size(cd_nelmts, cd_values) : 0;
    void *target = decoded ? malloc(decoded) : NULL;
    if (decoded && !target) {
        nf_h5error(a, a->min_callback, "filter", "%s failed: out of memory (%zu bytes)", what,
                   decoded);
        return 0;
    }

    PyGILState_STATE g = p_PyGILState_Ensure();
    PyObject *data = NULL, *cd = NULL, *res = NULL, *view = NULL;
    if (nf_callbacks(from_host, err, sizeof err) < 0) goto done;
    data = p_PyBytes_FromStringAndSize((const char *)*buf, (Py_ssize_t)nbytes);
    cd = p_PyTuple_New((Py_ssize_t)cd_nelmts);
    if (!data || !cd) { nf_fetch_error(err, sizeof err); goto done; }
    for (size_t i = 0; i < cd_nelmts; i++) {
        PyObject *x = p_PyLong_FromUnsignedLong(cd_values[i]);
        if (!x) { nf_fetch_error(err, sizeof err); goto done; }
        p_PyTuple_SetItem(cd, (Py_ssize_t)i, x); /* steals x */
    }
    if (target) {
        view = p_PyMemoryView_FromMemory((char *)target, (Py_ssize_t)decoded, PyBUF_WRITE);
        if (!view) { nf_fetch_error(err, sizeof err); goto done; }
    }
    res = p_PyObject_CallFunctionObjArgs(reverse ? py_decode : py_encode, data, cd, view, NULL);
    if (!res) { nf_fetch_error(err, sizeof err); goto done; }
    if (view) {             /* decoded into target: the callback returned how many bytes */
        Py_buffer check;    /* (the decoded array itself, as a buffer of `decoded` bytes) */
        if (p_PyObject_GetBuffer(res, &check, PyBUF_CONTIG_RO) < 0) {
            nf_fetch_error(err, sizeof err);
            goto done;
        }
        int ours = check.buf == target && (size_t)check.len == decoded;
        p_PyBuffer_Release(&check);
        p_Py_DecRef(res);
        res = NULL;
        if (!ours) {
            snprintf(err, sizeof err, "the Python callback did not decode into the buffer given");
            goto done;
        }
        if (!nf_release_view(view)) {
            snprintf(err, sizeof err, "the decoded chunk is still referenced from Python");
            target = NULL; /* never freed: Python may still read it */
            goto done;
        }
        free(*buf);
        *buf = target;
        target = NULL;
        *buf_size = decoded;
        result = decoded;
        goto done;
    }
    {   /* any contiguous buffer (the compressed bytes; a decoded array without set_local) */
        Py_buffer out_view;
        if (p_PyObject_GetBuffer(res, &out_view, PyBUF_CONTIG_RO) < 0) {
            nf_fetch_error(err, sizeof err);
            goto done;
        }
        size_t len = out_view.len > 0 ? (size_t)out_view.len : 0;
        void *out = len ? malloc(len) : NULL;
        if (out) memcpy(out, out_view.buf, len);
        p_PyBuffer_Release(&out_view);
        if (!len) { snprintf(err, sizeof err, "the Python callback returned no data"); goto done; }
        if (!out) { snprintf(err, sizeof err, "out of memory (%zu bytes)", len); goto done; }
        free(*buf);
        *buf = out;
        *buf_size = len;
        result = len;
    }
done:
    if (res) p_Py_DecRef(res);
    if (cd) p_Py_DecRef(cd);
    if (data) p_Py_DecRef(data);
    if (view) {             /* the error is fetched and cleared: frames holding views are gone */
        if (target && !nf_release_view(view)) target = NULL; /* still reachable: keep it */
        p_Py_DecRef(view);
    }
    free(target);
    p_PyGILState_Release(g);
    if (!result) nf_h5error(a, a->min_callback, "filter", "%s failed: %s", what, err);
    return result;
}

static size_t nf_filter_host(unsigned f, size_t n, const unsigned cd[], size_t nb, size_t *bs, void **b)
{
    pthread_once(&api_host_once, nf_host_once); /* only for error reporting */
    return nf_filter_with(&api_host, 1, f, n, cd, nb, bs, b);
}
static size_t nf_filter_h5py(unsigned f, size_t n, const unsigned cd[], size_t nb, size_t *bs, void **b)
{
    return nf_filter_with(&api_h5py, 0, f, n, cd, nb, bs, b);
}

/* ---------------------------------------------------------------------------------------- */
/* Plugin entry points                                                                      */
/* ---------------------------------------------------------------------------------------- */
static const H5Z_class2_t nf_class_host = {
    H5Z_CLASS_T_VERS, H5Z_FILTER_NEURAL, 1, 1,
    "neuralfilter: error-bounded neural compression (pyneuralfilter)",
    nf_can_apply_host, nf_set_local_host, nf_filter_host};

static const H5Z_class2_t nf_class_h5py = {
    H5Z_CLASS_T_VERS, H5Z_FILTER_NEURAL, 1, 1,
    "neuralfilter: error-bounded neural compression (pyneuralfilter)",
    nf_can_apply_h5py, nf_set_local_h5py, nf_filter_h5py};

NF_EXPORT int H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }
NF_EXPORT const void *H5PLget_plugin_info(void) { return &nf_class_host; }

NF_EXPORT const void *neuralfilter_h5py_class(const char *h5py_module)
{
    void *h = dlopen(h5py_module, RTLD_LAZY | RTLD_NOLOAD);
    if (!h) {
        snprintf(nf_error, sizeof nf_error, "%s is not loaded in this process: %s", h5py_module,
                 dlerror());
        return NULL;
    }
    nf_h5api a;
    nf_resolve(&a, h); /* dlsym searches the module and its dependencies: h5py's libhdf5 */
    if (!a.ok) {
        snprintf(nf_error, sizeof nf_error,
                 "no HDF5 functions (H5Pget_chunk, ...) reachable from %s", h5py_module);
        return NULL;
    }
    pthread_mutex_lock(&nf_lock);
    api_h5py = a;
    pthread_mutex_unlock(&nf_lock);
    return &nf_class_h5py;
}
