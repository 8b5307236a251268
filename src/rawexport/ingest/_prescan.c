/* rawexport.ingest._prescan: what decoding a body would build, counted before it is built,
 * without the GIL for large inputs and without allocating.
 *
 * scan_json: the events, values and nesting of a JSON or NDJSON body (jsonscan.py has the
 * contract). One pass over the bytes. Outside strings every byte is classed by a table:
 * whitespace, a separator (`,` `:`), an opening or closing bracket, a quote, or a scalar
 * byte (numbers, literals, garbage). A value starts at an opening bracket, a quote, or the
 * first scalar byte after anything else; each is one Python object of the parse (keys
 * included; true, false and null are counted too). A string runs to the next quote not
 * escaped by a backslash (a backslash takes the byte after it along), found 16 bytes at a
 * time. Events: the values at depth 0, except that a value at depth 0 that is an array is
 * a batch whose elements (depth 1) are the events. The scan stops at the first limit
 * passed. The bytes need not be valid JSON (the parser decides that later): brackets that
 * close more than was opened are ignored, an unterminated string ends the input.
 *
 * lz4_size: the bytes an LZ4 block's sequences state they write (codecs.unlz4 tells a block
 * that does not fit from a corrupt one by it), read until past `stop`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* inputs past this size are scanned without the GIL */
#define RELEASE_GIL_BYTES ((Py_ssize_t)1 << 16)

enum { C_SCALAR = 0, C_SPACE, C_SEP, C_OPEN, C_CLOSE, C_QUOTE };
enum { OK = 0, TOO_MANY_EVENTS, TOO_MANY_VALUES, EVENT_TOO_BIG, TOO_DEEP };

static unsigned char cls[256];

typedef struct {
    /* limits */
    Py_ssize_t max_events, max_values, max_event_values, max_depth;
    /* results */
    Py_ssize_t events, values, depth; /* depth: the deepest nesting seen */
    int code;
    Py_ssize_t index; /* the event a limit was passed in, -1 when none */
} Scan;

/* The first quote or backslash at or after p, or end. */
static inline const unsigned char *
string_stop(const unsigned char *p, const unsigned char *end)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    while (end - p >= 16) {
        __m128i b = _mm_loadu_si128((const __m128i *)p);
        int m = _mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(b, quote), _mm_cmpeq_epi8(b, backslash)));
        if (m)
            return p + __builtin_ctz((unsigned)m);
        p += 16;
    }
#endif
    while (p < end && *p != '"' && *p != '\\')
        p++;
    return p;
}

static void
scan(const unsigned char *p, const unsigned char *end, Scan *s)
{
    Py_ssize_t depth = 0, max_depth = 0, events = 0, values = 0, event_values = 0;
    int batch = 0; /* the value open at depth 0 is an array of events */
    s->code = OK;
    s->index = -1;
    while (p < end) {
        unsigned char ch = *p;
        unsigned char k = cls[ch];
        if (k == C_SPACE || k == C_SEP) {
            p++;
            continue;
        }
        if (k == C_CLOSE) {
            if (depth > 0 && --depth == 0)
                batch = 0;
            p++;
            continue;
        }
        /* a value starts at p: a scalar, a string or a container */
        if (++values > s->max_values) {
            s->code = TOO_MANY_VALUES;
            break;
        }
        if (depth == 0 && ch == '[') {
            batch = 1;
        }
        else if (depth == batch) {
            if (++events > s->max_events) {
                s->code = TOO_MANY_EVENTS;
                break;
            }
            event_values = 1;
        }
        else if (++event_values > s->max_event_values) {
            s->code = EVENT_TOO_BIG;
            s->index = events - 1;
            break;
        }
        p++;
        if (k == C_QUOTE) { /* to the quote that ends it; a backslash escapes the next byte */
            for (;;) {
                p = string_stop(p, end);
                if (p >= end)
                    break;
                if (*p == '"') {
                    p++;
                    break;
                }
                if (end - p <= 2) { /* a backslash and what it escapes end the input */
                    p = end;
                    break;
                }
                p += 2;
            }
        }
        else if (k == C_OPEN) {
            if (++depth > s->max_depth) {
                s->code = TOO_DEEP;
                s->index = events - 1;
                break;
            }
            if (depth > max_depth)
                max_depth = depth;
        }
        else { /* the rest of the scalar */
            while (p < end && cls[*p] == C_SCALAR)
                p++;
        }
    }
    s->events = events;
    s->values = values;
    s->depth = max_depth;
}

static int
limit_arg(PyObject *o, Py_ssize_t *out)
{
    if (o == Py_None) {
        *out = PY_SSIZE_T_MAX;
        return 0;
    }
    /* clipped to PY_SSIZE_T_MIN / MAX, which compares as the int itself would */
    *out = PyNumber_AsSsize_t(o, NULL);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *
scan_json(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *lim[4];
    Scan s;
    if (!PyArg_ParseTuple(args, "y*OOOO:scan_json", &view, &lim[0], &lim[1], &lim[2], &lim[3]))
        return NULL;
    if (limit_arg(lim[0], &s.max_events) < 0 || limit_arg(lim[1], &s.max_values) < 0 ||
        limit_arg(lim[2], &s.max_event_values) < 0 || limit_arg(lim[3], &s.max_depth) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *p = view.buf;
    if (view.len >= RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        scan(p, p + view.len, &s);
        Py_END_ALLOW_THREADS
    }
    else {
        scan(p, p + view.len, &s);
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(innnn)", s.code, s.events, s.values, s.depth, s.index);
}

/* The output an LZ4 block's sequences state, added up until past `stop`: a token (literal
 * length, match length), the literal length's extra bytes, the literals, a 2-byte offset,
 * the match length's extra bytes (each extra byte adds itself; 255 means another follows). A
 * block cut short ends the count. */
static unsigned long long
lz4_size_of(const unsigned char *p, const unsigned char *end, unsigned long long stop)
{
    unsigned long long out = 0;
    while (p < end) {
        unsigned token = *p++;
        unsigned long long literals = token >> 4;
        if (literals == 15) {
            while (p < end) {
                unsigned more = *p++;
                literals += more;
                if (more != 255)
                    break;
            }
        }
        out += literals;
        if (out > stop || (unsigned long long)(end - p) < literals + 2)
            return out;
        p += literals + 2; /* the literals, the match offset */
        unsigned long long match = token & 15;
        if (match == 15) {
            while (p < end) {
                unsigned more = *p++;
                match += more;
                if (more != 255)
                    break;
            }
        }
        out += match + 4;
        if (out > stop)
            return out;
    }
    return out;
}

static PyObject *
lz4_size(PyObject *self, PyObject *args)
{
    Py_buffer view;
    unsigned long long stop, out;
    if (!PyArg_ParseTuple(args, "y*K:lz4_size", &view, &stop))
        return NULL;
    const unsigned char *p = view.buf;
    if (view.len >= RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        out = lz4_size_of(p, p + view.len, stop);
        Py_END_ALLOW_THREADS
    }
    else {
        out = lz4_size_of(p, p + view.len, stop);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(out);
}

static PyMethodDef methods[] = {
    {"scan_json", scan_json, METH_VARARGS,
     "scan_json(data, max_events, max_values, max_event_values, max_depth, /)\n"
     "    -> (code, events, values, depth, index)\n\n"
     "Counts the events, values and nesting of JSON / NDJSON bytes, stopping at the first\n"
     "limit passed (None: no limit). code: 0 within the limits, 1 too many events, 2 too\n"
     "many values, 3 event `index` holds too many values, 4 event `index` nests too deep;\n"
     "the counts are those seen up to where the scan stopped."},
    {"lz4_size", lz4_size, METH_VARARGS,
     "lz4_size(block, stop, /) -> int\n\n"
     "The bytes an LZ4 block's sequences state they write, added up until past `stop`."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "rawexport.ingest._prescan",
    "Bodies counted before they are decoded; see rawexport.ingest.jsonscan and codecs.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__prescan(void)
{
    memset(cls, C_SCALAR, sizeof cls);
    cls[' '] = cls['\t'] = cls['\n'] = cls['\r'] = C_SPACE;
    cls[','] = cls[':'] = C_SEP;
    cls['['] = cls['{'] = C_OPEN;
    cls[']'] = cls['}'] = C_CLOSE;
    cls['"'] = C_QUOTE;
    return PyModule_Create(&module);
}
