/* imgopt._native: the C kernels as a plain CPython extension module (no dependencies).
 *
 * Pixel arguments are taken through the buffer protocol ("y*"), so any contiguous
 * bytes-like object works without a copy: bytes, memoryview, and in particular the cffi
 * buffer pyvips' Image.write_to_memory() returns, which points straight at the memory
 * libvips rendered into. The GIL is released while a kernel runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "kernels.h"

static PyObject *native_ssim(PyObject *self, PyObject *args)
{
    Py_buffer a, b;
    int width, height, bands;
    double result;
    int error = 0;

    if (!PyArg_ParseTuple(args, "y*y*iii:ssim", &a, &b, &width, &height, &bands))
        return NULL;
    if (width < 1 || height < 1 || bands < 1 || bands > 4) {
        PyErr_SetString(PyExc_ValueError, "ssim: width and height must be >= 1 and bands 1..4");
        goto fail;
    }
    if (a.len != (Py_ssize_t)width * height * bands || b.len != a.len) {
        PyErr_Format(PyExc_ValueError, "ssim: buffers of %zd and %zd bytes for %dx%dx%d", a.len, b.len,
                     width, height, bands);
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS
    result = imgopt_ssim(a.buf, b.buf, width, height, bands, &error);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    if (error)
        return PyErr_NoMemory();
    return PyFloat_FromDouble(result);
fail:
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return NULL;
}

static PyObject *native_thumbhash_encode(PyObject *self, PyObject *args)
{
    Py_buffer rgba;
    int w, h, n;
    uint8_t out[IMGOPT_THUMBHASH_MAX];

    if (!PyArg_ParseTuple(args, "y*ii:thumbhash_encode", &rgba, &w, &h))
        return NULL;
    if (w < 1 || h < 1 || w > 100 || h > 100) {
        PyBuffer_Release(&rgba);
        return PyErr_Format(PyExc_ValueError, "thumbhash_encode: %dx%d does not fit in 100x100", w, h);
    }
    if (rgba.len != (Py_ssize_t)w * h * 4) {
        PyBuffer_Release(&rgba);
        return PyErr_Format(PyExc_ValueError, "thumbhash_encode: %zd bytes for %dx%d RGBA", rgba.len, w, h);
    }
    Py_BEGIN_ALLOW_THREADS
    n = imgopt_thumbhash_encode(rgba.buf, w, h, out);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&rgba);
    if (n < 0)
        return PyErr_NoMemory();
    return PyBytes_FromStringAndSize((const char *)out, n);
}

/* The address a buffer-protocol object exposes; tests use it to show no copy is made. */
static PyObject *native_buffer_address(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *result;

    if (!PyArg_ParseTuple(args, "y*:buffer_address", &view))
        return NULL;
    result = PyLong_FromVoidPtr(view.buf);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"ssim", native_ssim, METH_VARARGS,
     "ssim(a, b, width, height, bands) -> float\n\nMean SSIM (luma, 8x8 windows, stride 4) of two "
     "interleaved 8-bit images."},
    {"thumbhash_encode", native_thumbhash_encode, METH_VARARGS,
     "thumbhash_encode(rgba, w, h) -> bytes\n\nThumbHash of an RGBA image of at most 100x100."},
    {"buffer_address", native_buffer_address, METH_VARARGS,
     "buffer_address(obj) -> int\n\nThe address of obj's buffer (for zero-copy checks)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "imgopt._native", "imgopt's C pixel kernels (see imgopt/native.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&module);
}
