/* rawexport.ingest._lzstring: lz-string decompression (npm lz-string 1.5.0), bounded.
 *
 * Written from the algorithm of LZString._decompress; see lzstring.py for the contract.
 *
 * The compressed stream is a sequence of values of `width` bits (16 for the Uint8Array form,
 * 6 for EncodedURIComponent, 15 for UTF16). The JS reads each value from its top bit down
 * and assembles every token from its low bit up, so reversing the bits of each value once
 * turns the stream into an ordinary LSB-first bit stream, read here through a 64-bit
 * accumulator. Past the end of the input the JS reads zero bits; so does this reader.
 *
 * Tokens: 0 and 1 are an 8- or 16-bit literal code unit, 2 is the end of the stream, k >= 3
 * is dictionary entry k. Every dictionary entry is a substring of the output (a literal, or
 * the previous entry plus the first unit of the current one), so an entry is kept as the
 * (offset, length) of one of its occurrences in the output, a buffer of UTF-16 code units,
 * plus its UTF-8 size. Memory is then the output (bounded by `limit`) plus 12 bytes per
 * entry (at most two entries per token, and a token takes at least 3 bits of input).
 *
 * The output's UTF-8 size is kept exactly as units are added (a low surrogate right after a
 * high one adds 1 byte, completing a 4-byte sequence; any other surrogate 3), so the limit
 * is enforced before anything is copied, and the result is encoded once at the end.
 *
 * The input is converted and the stream decoded without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* Output offsets, lengths and sizes are uint32; a larger limit acts as this one. */
#define MAX_LIMIT ((uint64_t)0x7FFFFFFF)
/* Tokens are at most this wide; a stream reaching it has > 2**45 entries: unreachable. */
#define MAX_BITS 48
/* inputs (code units) and outputs (bytes) past this size decode without the GIL */
#define RELEASE_GIL_UNITS ((Py_ssize_t)1 << 20)

enum { OK = 0, E_INVALID, E_OVERFLOW, E_NOMEM };

typedef struct {
    uint32_t off; /* where one occurrence starts in the output */
    uint32_t len; /* in UTF-16 code units */
    uint32_t u8;  /* UTF-8 bytes of the entry on its own */
} Entry;

typedef struct {
    /* input: values bit-reversed over `width` bits; or, for the Uint8Array form, raw: its
       bytes, read two at a time (no copy of a body that may be megabytes) */
    uint16_t *vals;
    const unsigned char *raw;
    size_t n;
    unsigned width;
    /* bit reader */
    uint64_t acc;
    unsigned nacc;
    size_t pos;
    uint64_t consumed; /* bits taken so far, zeros past the end included */
    /* output, UTF-16 code units */
    uint16_t *out;
    size_t out_len, out_cap;
    uint64_t u8_total; /* UTF-8 bytes of out[0:out_len] */
    uint64_t limit;
    /* dictionary; entries 0..2 are never referenced */
    Entry *dict;
    size_t dict_cap;
    /* error detail */
    const char *msg;
    Py_ssize_t err_pos;
    uint64_t err_value;
} Dec;

static inline uint16_t
rev16(uint32_t v)
{
    v = ((v >> 1) & 0x5555u) | ((v & 0x5555u) << 1);
    v = ((v >> 2) & 0x3333u) | ((v & 0x3333u) << 2);
    v = ((v >> 4) & 0x0F0Fu) | ((v & 0x0F0Fu) << 4);
    v = ((v >> 8) & 0x00FFu) | ((v & 0x00FFu) << 8);
    return (uint16_t)v;
}

static inline int
is_high(uint16_t u)
{
    return (u & 0xFC00u) == 0xD800u;
}

static inline int
is_low(uint16_t u)
{
    return (u & 0xFC00u) == 0xDC00u;
}

/* UTF-8 bytes that unit u adds after unit prev. */
static inline uint32_t
u8_size(uint16_t u, uint16_t prev)
{
    if (u < 0x80u)
        return 1;
    if (u < 0x800u)
        return 2;
    if (is_low(u) && is_high(prev))
        return 1;
    return 3;
}

static inline uint64_t
take(Dec *d, unsigned nbits)
{
    if (d->nacc < nbits) {
        while (d->nacc + d->width <= 64 && d->pos < d->n) {
            uint64_t v = d->raw != NULL ? rev16(((uint32_t)d->raw[2 * d->pos] << 8) |
                                                d->raw[2 * d->pos + 1])
                                        : d->vals[d->pos];
            d->pos++;
            d->acc |= v << d->nacc;
            d->nacc += d->width;
        }
    }
    uint64_t v = d->acc & ((UINT64_C(1) << nbits) - 1);
    d->acc >>= nbits;
    d->nacc = d->nacc > nbits ? d->nacc - nbits : 0;
    d->consumed += nbits;
    return v;
}

/* Room for `extra` more output units; callers have checked the limit already. */
static int
reserve(Dec *d, size_t extra)
{
    size_t need = d->out_len + extra;
    if (need <= d->out_cap)
        return OK;
    size_t cap = d->out_cap * 2;
    if (cap < need)
        cap = need;
    if (cap > d->limit && need <= d->limit)
        cap = (size_t)d->limit;
    uint16_t *p = PyMem_RawRealloc(d->out, cap * sizeof(uint16_t));
    if (p == NULL)
        return E_NOMEM;
    d->out = p;
    d->out_cap = cap;
    return OK;
}

static int
add_entry(Dec *d, size_t index, uint32_t off, uint32_t len, uint32_t u8)
{
    if (index >= d->dict_cap) {
        size_t cap = d->dict_cap * 2;
        Entry *p = PyMem_RawRealloc(d->dict, cap * sizeof(Entry));
        if (p == NULL)
            return E_NOMEM;
        d->dict = p;
        d->dict_cap = cap;
    }
    d->dict[index].off = off;
    d->dict[index].len = len;
    d->dict[index].u8 = u8;
    return OK;
}

/* The UTF-8 size of the output once `first` (the first unit of an entry of standalone
 * size u8) is appended after the current last unit. */
static inline uint64_t
grown(const Dec *d, uint16_t first, uint32_t u8)
{
    uint64_t t = d->u8_total + u8;
    if (d->out_len && is_high(d->out[d->out_len - 1]) && is_low(first))
        t -= 2;
    return t;
}

static int
decode(Dec *d)
{
    const uint64_t total_bits = (uint64_t)d->n * d->width;
    unsigned num_bits = 3;
    uint64_t enlarge_in = 4;
    size_t dict_size = 4;
    int rc;

    d->dict_cap = 256;
    d->dict = PyMem_RawMalloc(d->dict_cap * sizeof(Entry));
    /* JSON compresses about 3:1; the buffer doubles when that is not enough */
    uint64_t guess = total_bits / 2 + 256;
    d->out_cap = (size_t)(guess < d->limit ? guess : (d->limit < 256 ? 256 : d->limit));
    d->out = PyMem_RawMalloc(d->out_cap * sizeof(uint16_t));
    if (d->dict == NULL || d->out == NULL)
        return E_NOMEM;

    uint64_t c = take(d, 2);
    if (c == 2)
        return OK; /* the empty string */
    if (c == 3) {
        /* The JS has no case for it and goes on with `undefined` as the first entry. */
        d->msg = "invalid first token";
        return E_INVALID;
    }
    uint16_t u = (uint16_t)take(d, c == 0 ? 8 : 16);
    uint32_t u8 = u8_size(u, 0);
    if (u8 > d->limit)
        return E_OVERFLOW;
    d->out[0] = u;
    d->out_len = 1;
    d->u8_total = u8;
    add_entry(d, 3, 0, 1, u8);
    Entry w = d->dict[3];

    for (;;) {
        if (d->consumed >= total_bits) {
            d->msg = "truncated stream: no end marker";
            return E_INVALID;
        }
        if (num_bits > MAX_BITS) {
            d->msg = "dictionary too large";
            return E_INVALID;
        }
        c = take(d, num_bits);
        size_t at = d->out_len;
        Entry e;
        if (c == 2)
            return OK;
        if (c < 2) {
            /* a literal: it becomes entry dict_size and is emitted at once */
            u = (uint16_t)take(d, c == 0 ? 8 : 16);
            u8 = u8_size(u, 0);
            uint64_t t = grown(d, u, u8);
            if (t > d->limit)
                return E_OVERFLOW;
            if ((rc = reserve(d, 1)) != OK)
                return rc;
            d->out[d->out_len++] = u;
            d->u8_total = t;
            e.off = (uint32_t)at;
            e.len = 1;
            e.u8 = u8;
            if ((rc = add_entry(d, dict_size, e.off, e.len, e.u8)) != OK)
                return rc;
            dict_size++;
            if (--enlarge_in == 0) {
                enlarge_in = UINT64_C(1) << num_bits;
                num_bits++;
            }
        }
        else if (c < dict_size) {
            e = d->dict[c];
            uint64_t t = grown(d, d->out[e.off], e.u8);
            if (t > d->limit)
                return E_OVERFLOW;
            if ((rc = reserve(d, e.len)) != OK)
                return rc;
            memcpy(d->out + at, d->out + e.off, (size_t)e.len * sizeof(uint16_t));
            d->out_len += e.len;
            d->u8_total = t;
            e.off = (uint32_t)at;
        }
        else if (c == dict_size) {
            /* the entry being defined: w + w[0] */
            uint16_t first = d->out[w.off];
            e.len = w.len + 1;
            e.u8 = w.u8 + u8_size(first, d->out[w.off + w.len - 1]);
            uint64_t t = grown(d, first, e.u8);
            if (t > d->limit)
                return E_OVERFLOW;
            if ((rc = reserve(d, e.len)) != OK)
                return rc;
            memcpy(d->out + at, d->out + w.off, (size_t)w.len * sizeof(uint16_t));
            d->out[at + w.len] = first;
            d->out_len += e.len;
            d->u8_total = t;
            e.off = (uint32_t)at;
        }
        else {
            d->msg = "reference to an undefined dictionary entry";
            d->err_value = c;
            return E_INVALID;
        }

        /* w + e[0]: w's occurrence is followed by e's first unit, so it is at w.off */
        uint16_t next = d->out[w.off + w.len];
        rc = add_entry(d, dict_size, w.off, w.len + 1,
                       w.u8 + u8_size(next, d->out[w.off + w.len - 1]));
        if (rc != OK)
            return rc;
        dict_size++;
        w = e;
        if (--enlarge_in == 0) {
            enlarge_in = UINT64_C(1) << num_bits;
            num_bits++;
        }
    }
}

/* s[0:n] as UTF-8 into dst[0:cap]; the bytes written, or cap + 1 if they did not fit
 * (the decoder's count and this one disagree: a bug, never a buffer overrun). */
static size_t
encode_utf8(const uint16_t *s, size_t n, unsigned char *dst, size_t cap)
{
    unsigned char *p = dst, *end = dst + cap;
    size_t i = 0;
    while (i < n) {
        uint32_t u = s[i++];
        if (end - p < 4) {
            /* the last few bytes: only what fits */
            size_t need = u < 0x80u ? 1 : u < 0x800u ? 2 : 3;
            if (is_high((uint16_t)u) && i < n && is_low(s[i]))
                need = 4;
            if ((size_t)(end - p) < need)
                return cap + 1;
        }
        if (u < 0x80u) {
            *p++ = (unsigned char)u;
        }
        else if (u < 0x800u) {
            *p++ = (unsigned char)(0xC0u | (u >> 6));
            *p++ = (unsigned char)(0x80u | (u & 0x3Fu));
        }
        else if (is_high((uint16_t)u) && i < n && is_low(s[i])) {
            uint32_t cp = 0x10000u + ((u - 0xD800u) << 10) + (s[i++] - 0xDC00u);
            *p++ = (unsigned char)(0xF0u | (cp >> 18));
            *p++ = (unsigned char)(0x80u | ((cp >> 12) & 0x3Fu));
            *p++ = (unsigned char)(0x80u | ((cp >> 6) & 0x3Fu));
            *p++ = (unsigned char)(0x80u | (cp & 0x3Fu));
        }
        else { /* BMP, or a lone surrogate (as 'surrogatepass' writes it) */
            *p++ = (unsigned char)(0xE0u | (u >> 12));
            *p++ = (unsigned char)(0x80u | ((u >> 6) & 0x3Fu));
            *p++ = (unsigned char)(0x80u | (u & 0x3Fu));
        }
    }
    return (size_t)(p - dst);
}

/* ---- the three wire forms: input -> values ---------------------------------------- */

typedef enum { FORM_UINT8, FORM_URI, FORM_UTF16 } Form;

typedef struct {
    Form form;
    const unsigned char *bytes; /* the bytes form, or NULL for a str */
    int kind;                   /* the str form */
    const void *data;
    Py_ssize_t len; /* bytes, or code points */
} Source;

static signed char uri_value[256];

static void
init_uri_table(void)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-$";
    memset(uri_value, -1, sizeof uri_value);
    for (int i = 0; alphabet[i]; i++)
        uri_value[(unsigned char)alphabet[i]] = (signed char)i;
    uri_value[' '] = 62; /* form decoding made '+' a space */
}

static inline uint32_t
source_at(const Source *s, Py_ssize_t i)
{
    return s->bytes ? s->bytes[i] : PyUnicode_READ(s->kind, s->data, i);
}

/* Fills d->vals, d->n, d->width from the source. */
static int
convert(Dec *d, const Source *s)
{
    Py_ssize_t i, n = s->len;
    switch (s->form) {
    case FORM_UINT8:
        d->width = 16;
        d->n = (size_t)n / 2;
        d->raw = s->bytes; /* read in place by take() */
        return OK;
    case FORM_URI:
        d->width = 6;
        d->n = (size_t)n;
        d->vals = PyMem_RawMalloc(d->n * sizeof(uint16_t) + 1);
        if (d->vals == NULL)
            return E_NOMEM;
        for (i = 0; i < n; i++) {
            uint32_t ch = source_at(s, i);
            int v = ch < 256 ? uri_value[ch] : -1;
            if (v < 0) {
                d->msg = "invalid character";
                d->err_pos = i;
                return E_INVALID;
            }
            /* '$' (64) has no bit among the 6 read */
            d->vals[i] = (uint16_t)(rev16((uint32_t)v & 63u) >> 10);
        }
        return OK;
    case FORM_UTF16: {
        d->width = 15;
        d->vals = PyMem_RawMalloc((size_t)n * sizeof(uint16_t) + 1);
        if (d->vals == NULL)
            return E_NOMEM;
        size_t k = 0;
        for (i = 0; i < n;) {
            Py_ssize_t start = i;
            uint32_t cp;
            if (s->bytes == NULL) {
                cp = source_at(s, i++);
            }
            else {
                /* UTF-8: the form's characters are U+0020..U+801F, 1 to 3 bytes */
                const unsigned char *b = s->bytes;
                uint32_t b0 = b[i++];
                if (b0 < 0x80u) {
                    cp = b0;
                }
                else if (b0 >= 0xC2u && b0 <= 0xDFu && i < n && (b[i] & 0xC0u) == 0x80u) {
                    cp = ((b0 & 0x1Fu) << 6) | (b[i++] & 0x3Fu);
                }
                else if (b0 >= 0xE0u && b0 <= 0xEFu && i + 1 < n && (b[i] & 0xC0u) == 0x80u &&
                         (b[i + 1] & 0xC0u) == 0x80u) {
                    cp = ((b0 & 0x0Fu) << 12) | ((uint32_t)(b[i] & 0x3Fu) << 6) |
                         (b[i + 1] & 0x3Fu);
                    i += 2;
                    if (cp < 0x800u)
                        cp = 0; /* overlong: rejected below */
                }
                else {
                    cp = 0; /* not UTF-8 of U+0000..U+FFFF: rejected below */
                }
            }
            if (cp < 0x20u || cp > 0x801Fu) {
                d->msg = "invalid character";
                d->err_pos = start;
                return E_INVALID;
            }
            d->vals[k++] = (uint16_t)(rev16(cp - 0x20u) >> 1);
        }
        d->n = k;
        return OK;
    }
    }
    return E_INVALID;
}

/* ---- Python entry points ------------------------------------------------------------ */

static PyObject *
run(Form form, PyObject *obj, Py_buffer *view, Py_ssize_t limit)
{
    Source src = {form, NULL, 0, NULL, 0};
    Dec d;
    memset(&d, 0, sizeof d);
    d.err_pos = -1;

    if (limit < 0) {
        PyErr_SetString(PyExc_ValueError, "limit must be >= 0");
        return NULL;
    }
    d.limit = (uint64_t)limit > MAX_LIMIT ? MAX_LIMIT : (uint64_t)limit;
    if (view != NULL) {
        src.bytes = view->buf;
        src.len = view->len;
    }
    else {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(obj) < 0)
            return NULL;
#endif
        src.kind = PyUnicode_KIND(obj);
        src.data = PyUnicode_DATA(obj);
        src.len = PyUnicode_GET_LENGTH(obj);
    }
    if (src.len == 0) {
        /* the JS answers null */
        PyErr_SetString(PyExc_ValueError, "lz-string: empty input");
        return NULL;
    }
    if (form == FORM_UINT8 && src.len % 2) {
        /* the JS throws (an array of length n/2) */
        PyErr_SetString(PyExc_ValueError, "lz-string: odd byte count for the Uint8Array form");
        return NULL;
    }

    /* A small body (an SDK batch: tens of KB, ~0.1 ms) keeps the GIL: the caller is the
       event loop, and a thread that lets the GIL go waits up to the switch interval (5 ms)
       to get it back from a busy writer thread. A large one lets other threads run. */
    int rc;
    PyThreadState *saved = src.len > RELEASE_GIL_UNITS ? PyEval_SaveThread() : NULL;
    rc = convert(&d, &src);
    if (rc == OK)
        rc = decode(&d);
    if (saved != NULL)
        PyEval_RestoreThread(saved);

    PyObject *result = NULL;
    if (rc == OK) {
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)d.u8_total);
        if (result != NULL) {
            unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
            size_t size = (size_t)d.u8_total, written;
            saved = size > RELEASE_GIL_UNITS ? PyEval_SaveThread() : NULL;
            written = encode_utf8(d.out, d.out_len, dst, size);
            if (saved != NULL)
                PyEval_RestoreThread(saved);
            if (written != size) {
                Py_CLEAR(result);
                PyErr_SetString(PyExc_SystemError, "lz-string: UTF-8 size mismatch");
            }
        }
    }
    else if (rc == E_OVERFLOW) {
        PyErr_Format(PyExc_OverflowError,
                     "lz-string: decompressed output exceeds the limit of %zd bytes", limit);
    }
    else if (rc == E_NOMEM) {
        PyErr_NoMemory();
    }
    else if (d.err_pos >= 0) {
        PyErr_Format(PyExc_ValueError, "lz-string: %s at offset %zd", d.msg, d.err_pos);
    }
    else if (d.err_value) {
        PyErr_Format(PyExc_ValueError, "lz-string: %s (%llu)", d.msg,
                     (unsigned long long)d.err_value);
    }
    else {
        PyErr_Format(PyExc_ValueError, "lz-string: %s", d.msg);
    }
    PyMem_RawFree(d.vals);
    PyMem_RawFree(d.out);
    PyMem_RawFree(d.dict);
    return result;
}

static char *kwlist[] = {"data", "limit", NULL};

static PyObject *
decompress_uint8(PyObject *self, PyObject *args, PyObject *kwargs)
{
    Py_buffer view;
    Py_ssize_t limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*n:decompress_uint8", kwlist, &view,
                                     &limit))
        return NULL;
    PyObject *r = run(FORM_UINT8, NULL, &view, limit);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *
text_form(Form form, const char *fmt, PyObject *args, PyObject *kwargs)
{
    PyObject *obj;
    Py_ssize_t limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, fmt, kwlist, &obj, &limit))
        return NULL;
    if (PyUnicode_Check(obj))
        return run(form, obj, NULL, limit);
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = run(form, obj, &view, limit);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *
decompress_uri(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return text_form(FORM_URI, "On:decompress_uri", args, kwargs);
}

static PyObject *
decompress_utf16(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return text_form(FORM_UTF16, "On:decompress_utf16", args, kwargs);
}

static PyMethodDef methods[] = {
    {"decompress_uint8", (PyCFunction)(void (*)(void))decompress_uint8,
     METH_VARARGS | METH_KEYWORDS,
     "decompress_uint8(data, limit) -> bytes\n\n"
     "Like LZString.decompressFromUint8Array: data holds 16-bit units, big-endian.\n"
     "Returns the text as UTF-8. OverflowError past `limit` bytes of output;\n"
     "ValueError for input the JS would not decode to a complete string."},
    {"decompress_uri", (PyCFunction)(void (*)(void))decompress_uri,
     METH_VARARGS | METH_KEYWORDS,
     "decompress_uri(data, limit) -> bytes\n\n"
     "Like LZString.decompressFromEncodedURIComponent (a space is read as '+').\n"
     "Returns the text as UTF-8. OverflowError past `limit` bytes of output;\n"
     "ValueError for input the JS would not decode to a complete string."},
    {"decompress_utf16", (PyCFunction)(void (*)(void))decompress_utf16,
     METH_VARARGS | METH_KEYWORDS,
     "decompress_utf16(data, limit) -> bytes\n\n"
     "Like LZString.decompressFromUTF16; bytes are the form's text in UTF-8.\n"
     "Returns the text as UTF-8. OverflowError past `limit` bytes of output;\n"
     "ValueError for input the JS would not decode to a complete string."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "rawexport.ingest._lzstring",
    "Bounded lz-string decompression (npm lz-string 1.5.0); see rawexport.ingest.lzstring.",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__lzstring(void)
{
    init_uri_table();
    return PyModule_Create(&module);
}
