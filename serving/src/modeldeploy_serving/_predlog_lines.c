/* stub for the packaging helper: the real encoder replaces this file */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *one_row_lines(PyObject *self, PyObject *args) { Py_RETURN_NONE; }

static PyMethodDef methods[] = {
    {"one_row_lines", one_row_lines, METH_VARARGS, "stub"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_predlog_lines", NULL, -1, methods};

PyMODINIT_FUNC PyInit__predlog_lines(void) { return PyModule_Create(&module); }
