/*
 * What the files of the one extension module rawexport.export._csvline share (the module's
 * functions are described at the top of _csvline.c):
 *   _csvline.c         the module (method table, init); parsing of column tuples, out buffers
 *   _csvline_build.c   build and encode: the quoting scan, escaping, line hashing
 *   _csvline_gather.c  gather and bucket
 *   _csvline_sort.c    order
 * The hot accessors are static inline here, so each file inlines its own copy.
 */
#ifndef RAWEXPORT_CSVLINE_H
#define RAWEXPORT_CSVLINE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Internal to the extension module: not exported from the .so, and bound locally. */
#define CSVLINE_INTERNAL __attribute__((visibility("hidden")))

enum { STR32 = 0, STR64 = 1, DICT = 2, INT64 = 3 };

/* 1: forces quoting; 3: forces quoting and takes a backslash before it. Defined and
 * filled in _csvline.c, read by the quoting scan in _csvline_build.c. */
CSVLINE_INTERNAL extern unsigned char special[256];

typedef struct {
    int kind, quote, has_validity;
    Py_ssize_t offset, items; /* items: values in a (DICT: entries in b) */
    Py_buffer validity, a, b, c;
    int held_a, held_b, held_c;
} column;

typedef struct {
    PyObject *owner;
    Py_buffer view;
} out_buffer;

static inline int
is_valid(const column *col, Py_ssize_t i)
{
    if (!col->has_validity)
        return 1;
    const unsigned char *bits = (const unsigned char *)col->validity.buf;
    return (bits[i >> 3] >> (i & 7)) & 1;
}

/* Start of value i of a STR32/STR64 column, or of entry i of a DICT column. */
static inline int64_t
str_offset(const column *col, Py_ssize_t i)
{
    if (col->kind == STR32)
        return ((const int32_t *)col->a.buf)[i];
    if (col->kind == STR64)
        return ((const int64_t *)col->a.buf)[i];
    return ((const int64_t *)col->b.buf)[i];
}

static inline const Py_buffer *
str_data(const column *col)
{
    return col->kind == DICT ? &col->c : &col->b;
}

/* Bytes of value i (STR kinds: raw, before quoting; DICT: the encoded entry); -1 if bad. */
static inline int
value_at(const column *col, Py_ssize_t i, const unsigned char **s, size_t *len,
         size_t *avail)
{
    Py_ssize_t at = i;
    if (col->kind == DICT) {
        int32_t index = ((const int32_t *)col->a.buf)[i];
        if (index < 0 || index >= col->items)
            return -1;
        at = index;
    }
    int64_t lo = str_offset(col, at), hi = str_offset(col, at + 1);
    const Py_buffer *data = str_data(col);
    if (lo < 0 || hi < lo || hi > data->len)
        return -1;
    *s = (const unsigned char *)data->buf + lo;
    *len = (size_t)(hi - lo);
    *avail = (size_t)(data->len - lo);
    return 0;
}

/* _csvline.c */
CSVLINE_INTERNAL int allocate_buffer(PyObject *allocate, Py_ssize_t size, out_buffer *out);
CSVLINE_INTERNAL void drop_buffer(out_buffer *b);
CSVLINE_INTERNAL void release(column *cols, Py_ssize_t ncols);
CSVLINE_INTERNAL column *parse_columns(PyObject *seq, Py_ssize_t n, Py_ssize_t *ncols);
CSVLINE_INTERNAL column *parse_text_column(PyObject *item, Py_ssize_t n);

/* _csvline_build.c */
CSVLINE_INTERNAL PyObject *build(PyObject *self, PyObject *args);
CSVLINE_INTERNAL PyObject *encode(PyObject *self, PyObject *args);

/* _csvline_gather.c */
CSVLINE_INTERNAL PyObject *gather(PyObject *self, PyObject *args);
CSVLINE_INTERNAL PyObject *bucket(PyObject *self, PyObject *args);
/* _csvline_sort.c */
CSVLINE_INTERNAL PyObject *order(PyObject *self, PyObject *args);

#endif /* RAWEXPORT_CSVLINE_H */
