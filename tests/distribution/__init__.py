"""The distribution as users get it. (Not ``packaging``: that name would shadow the PyPI
package for every test, tests/ being on sys.path.)"""
