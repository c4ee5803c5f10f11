from distcount_cli._main import main

if __name__ == "__main__":
    main()
